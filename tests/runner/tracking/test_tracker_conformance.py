"""One conformance suite over every tracker backend: what the worker, the scheduler and the report
command rely on, checked the same way on MLflow over SQLite (the default workspace store), over
PostgreSQL (a real throwaway cluster, ``tests/support/engines/pg_cluster.py``) and through a real
``mlflow server`` on 127.0.0.1 (``tests/support/engines/mlflow_server.py``: runs, metrics and
artifacts over HTTP, artifacts in the server's own store). The NullTracker (tracking off) answers the same calls without error.

Each backend is built once per module (MLflow's migrations take seconds, tens of seconds on
PostgreSQL); each test uses an experiment of its own.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from runner.tracking import NullTracker, TrackingError, open_tracker  # noqa: E402
from runner.tracking.mlflow_files import mlflow_sqlite_uri  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@dataclass
class Backend:
    name: str
    uri: str
    artifact_location: Optional[str]
    server: object = None  # mlflow_server.MlflowServer for the server backend

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def steps(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every point of ``key`` (duplicates kept), by step."""
        return sorted((m.step, m.value) for m in self.client().get_metric_history(run_id, key))

    def artifact(self, run_id: str, path: str, tmp_path: Path) -> bytes:
        """A run's artifact as a reader gets it: through the server's artifact route (what its UI
        fetches, from any host) for the server backend, else from the artifact store."""
        if self.server is not None:
            return self.server.artifact(run_id, path)
        import mlflow.artifacts

        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(tmp_path),
                                                    tracking_uri=self.uri)
        return Path(local).read_bytes()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "server"])
def backend(request, tmp_path_factory):
    if request.param == "sqlite":
        ws = tmp_path_factory.mktemp("ws")
        yield Backend("sqlite", mlflow_sqlite_uri(ws / "mlflow.db"), (ws / "mlartifacts").as_uri())
    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").fresh_db("mlflow")
        yield Backend("postgresql", url, tmp_path_factory.mktemp("pg-artifacts").as_uri())
    else:
        from tests.support.engines.mlflow_server import mlflow_server

        with mlflow_server() as server:
            yield Backend("server", server.url, None, server)


@pytest.fixture
def experiment(request) -> str:
    return f"conf-{request.node.originalname}"


@pytest.fixture
def tracker(backend, experiment):
    """A prepared tracker with a quick writer (its own experiment per test)."""
    from runner.tracking.mlflow_tracker import MLflowTracker

    tracker = MLflowTracker(backend.uri, experiment, backend.artifact_location, flush_interval_s=0.05)
    tracker.prepare()
    return tracker


def _open(tracker, name="trial", tags=None, params=None, run_id=None):
    return tracker.open_run(run_id=run_id, name=name, tags=tags or {}, params=params or {})


def test_prepare_twice_is_harmless(backend, experiment):
    first = open_tracker(backend.uri, experiment, backend.artifact_location)
    first.prepare()
    first.prepare()
    open_tracker(backend.uri, experiment, backend.artifact_location).prepare()  # another process's
    client = backend.client()
    matching = [e for e in client.search_experiments(filter_string=f"name = '{experiment}'")]
    assert len(matching) == 1
    if backend.server is not None:  # the server keeps the artifacts
        assert matching[0].artifact_location.startswith("mlflow-artifacts:")
    else:
        assert matching[0].artifact_location == backend.artifact_location


def test_open_run_logs_params_tags_and_metrics_of_any_name(tracker, backend):
    names = ["loss", "val/mIoU top-1", "lr:group 0", "epoch_seconds", "a-b.c_d"]
    run = _open(tracker, name="s1/v1/seed0", tags={"study": "s1", "seed": 0},
                params={"lr": 0.001, "layers": (3, 4, 6), "note": None})
    for step in range(1, 4):
        run.log_metrics({name: step * 0.5 for name in names}, step=step)
    run.set_tags({"phase": "train"})
    run.flush()
    info = backend.client().get_run(run.run_id)
    assert info.info.run_name == "s1/v1/seed0" and info.info.status == "RUNNING"
    assert info.data.params == {"lr": "0.001", "layers": "(3, 4, 6)", "note": "None"}
    assert {k: info.data.tags[k] for k in ("study", "seed", "phase")} == {"study": "s1", "seed": "0", "phase": "train"}
    for name in names:
        assert backend.steps(run.run_id, name) == [(1, 0.5), (2, 1.0), (3, 1.5)]
    run.finish()


def test_log_metrics_returns_while_the_writer_is_blocked(tracker, backend, monkeypatch):
    run = _open(tracker)
    writing, release = threading.Event(), threading.Event()
    real = run.client.log_batch

    def held(*args, **kwargs):
        writing.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(run.client, "log_batch", held)
    run.log_metrics({"loss": 1.0}, step=1)
    assert writing.wait(60)  # the writer is inside a write and cannot go on
    for step in range(2, 500):
        run.log_metrics({"loss": 1.0}, step=step)  # each call returns: nothing waits for the write
    assert backend.steps(run.run_id, "loss") == []
    release.set()
    run.flush()
    assert [s for s, _ in backend.steps(run.run_id, "loss")] == list(range(1, 500))
    run.finish()


def test_finish_sets_finished_and_is_idempotent(tracker, backend):
    run = _open(tracker)
    run.log_metrics({"loss": 2.0}, step=7)
    run.finish("FINISHED")
    assert backend.client().get_run(run.run_id).info.status == "FINISHED"
    assert backend.steps(run.run_id, "loss") == [(7, 2.0)]  # drained before the status was set
    run.finish("FINISHED")
    run.finish("FAILED")  # a second finish changes nothing
    assert backend.client().get_run(run.run_id).info.status == "FINISHED"
    failed = _open(tracker)
    failed.finish("FAILED")
    assert backend.client().get_run(failed.run_id).info.status == "FAILED"


def test_a_reopened_run_does_not_log_replayed_steps_again(tracker, backend):
    """A killed attempt logged steps 1-8 (score at its epochs' ends, 4 and 8); the trial resumes
    from its checkpoint at step 4 and computes steps 5-8 again: each point shows once."""
    killed = _open(tracker, params={"lr": 0.01})
    for step in range(1, 9):
        killed.log_metrics({"loss": float(step)}, step=step)
        if step % 4 == 0:
            killed.log_metrics({"score": float(step)}, step=step)
    killed.flush()
    killed.abandon()  # kill -9: the run stays RUNNING
    assert tracker.end_run(killed.run_id) is True  # the next owner ends it ...

    resumed = _open(tracker, run_id=killed.run_id, params={"lr": 0.01}, tags={"attempt": 2})  # ... and resumes it
    assert resumed.run_id == killed.run_id
    assert backend.client().get_run(killed.run_id).info.status == "RUNNING"
    for step in range(5, 13):
        resumed.log_metrics({"loss": float(step) + 100}, step=step)
        if step % 4 == 0:
            resumed.log_metrics({"score": float(step) + 100}, step=step)
    resumed.finish()
    assert backend.steps(killed.run_id, "loss") == [(s, float(s)) for s in range(1, 9)] + \
        [(s, float(s) + 100) for s in range(9, 13)]
    assert backend.steps(killed.run_id, "score") == [(4, 4.0), (8, 8.0), (12, 112.0)]
    run = backend.client().get_run(killed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["attempt"] == "2"
    assert run.data.params == {"lr": "0.01"}


def test_reopen_restores_a_deleted_run_and_replaces_an_unknown_one(tracker, backend):
    first = _open(tracker)
    first.finish("KILLED")
    backend.client().delete_run(first.run_id)  # deleted in the UI
    reopened = _open(tracker, run_id=first.run_id)
    info = backend.client().get_run(first.run_id).info
    assert reopened.run_id == first.run_id and info.lifecycle_stage == "active" and info.status == "RUNNING"
    reopened.finish()

    lost = _open(tracker, run_id="0" * 32, name="lost")  # the MLflow store was reset since
    assert lost.run_id != "0" * 32
    assert backend.client().get_run(lost.run_id).info.run_name == "lost"
    lost.finish()


def test_end_run_kills_only_a_running_run(tracker, backend):
    running, done = _open(tracker), _open(tracker)
    done.finish()
    assert tracker.end_run(running.run_id) is True
    assert tracker.end_run(done.run_id) is False
    assert tracker.end_run("0" * 32) is False  # an attempt that died before creating it
    assert backend.client().get_run(running.run_id).info.status == "KILLED"
    assert backend.client().get_run(done.run_id).info.status == "FINISHED"
    failing = _open(tracker)
    assert tracker.end_run(failing.run_id, "FAILED") is True
    assert backend.client().get_run(failing.run_id).info.status == "FAILED"
    with pytest.raises(ValueError):
        tracker.end_run(running.run_id, "RUNNING")


def test_find_runs_by_tag_oldest_first(tracker):
    assert tracker.find_runs("config_hash", "abc") == []
    older = _open(tracker, tags={"config_hash": "abc"})
    older.finish()
    start = MlflowClient(tracker.uri).get_run(older.run_id).info.start_time
    while int(time.time() * 1000) <= start:  # a later start time (MLflow orders by it)
        time.sleep(0.001)
    newer = _open(tracker, tags={"config_hash": "abc"})
    _open(tracker, tags={"config_hash": "other"}).finish()
    assert tracker.find_runs("config_hash", "abc") == [(older.run_id, "FINISHED"), (newer.run_id, "RUNNING")]
    newer.finish()


def test_last_step(tracker):
    run = _open(tracker)
    for step in (3, 9, 6):
        run.log_metrics({"loss": 0.1}, step=step)
    run.finish()
    assert tracker.last_step(run.run_id, "loss") == 9
    assert tracker.last_step(run.run_id, "never-logged") is None
    assert tracker.last_step("0" * 32, "loss") is None


def test_log_report_twice_reuses_one_run(tracker, backend, tmp_path):
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.md").write_text("# first\n")
    (report / "report.html").write_text("<h1>first</h1>\n")
    (report / "figures" / "chain.png").write_bytes(b"\x89PNG\r\n\x1a\nchain")
    (report / ".report.md.x1.tmp").write_text("an atomic write in progress")
    run_id = tracker.log_report(report)
    (report / "report.md").write_text("# second\n")
    assert tracker.log_report(report) == run_id
    assert tracker.find_runs("ablate.kind", "report") == [(run_id, "FINISHED")]
    assert backend.artifact(run_id, "report.md", tmp_path / "a") == b"# second\n"
    assert backend.artifact(run_id, "report.html", tmp_path / "b") == b"<h1>first</h1>\n"
    assert backend.artifact(run_id, "figures/chain.png", tmp_path / "c") == b"\x89PNG\r\n\x1a\nchain"
    listed = {a.path for a in backend.client().list_artifacts(run_id)}
    assert listed == {"report.md", "report.html", "figures"}


def test_artifacts_read_back(tracker, backend, tmp_path):
    image = tmp_path / "samples.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nsamples")
    run = _open(tracker)
    run.log_artifact(str(image), "samples")
    run.finish()
    assert backend.artifact(run.run_id, "samples/samples.png", tmp_path / "out") == image.read_bytes()
    artifact_uri = backend.client().get_run(run.run_id).info.artifact_uri
    if backend.server is not None:  # in the server's store, written through its API
        assert artifact_uri.startswith("mlflow-artifacts:")
        assert [p.name for p in backend.server.artifacts.rglob("samples.png")] == ["samples.png"]
    else:
        assert artifact_uri.startswith(backend.artifact_location)


def test_the_tracker_raises_tracking_errors_only(tracker, monkeypatch):
    """A failure of MLflow's after the retries reaches the caller as TrackingError (the worker
    never imports mlflow to catch its exceptions)."""
    monkeypatch.setattr(tracker, "_retries", 0)

    def broken(*args, **kwargs):
        raise ConnectionError("the store went away")

    monkeypatch.setattr(tracker.client, "search_runs", broken)
    with pytest.raises(TrackingError) as info:
        tracker.find_runs("config_hash", "abc")
    assert isinstance(info.value.__cause__, ConnectionError)


def test_null_tracker_answers_every_call(tmp_path):
    tracker = open_tracker("none", "e", None)
    assert isinstance(tracker, NullTracker)
    tracker.prepare()
    tracker.prepare()
    tracker.connect()
    run = tracker.open_run(run_id=None, name="n", tags={"a": "b"}, params={"lr": 1}, may_write=lambda: True)
    assert run.run_id == ""
    run.log_metrics({"any name/at all": 1.0}, step=0)
    run.log_artifact(str(tmp_path / "missing.png"), "samples")
    run.set_tags({"phase": "train"})
    run.flush()
    run.finish("FINISHED")
    run.finish("FAILED")
    run.abandon()
    assert tracker.find_runs("config_hash", "abc") == []
    assert tracker.end_run("x") is False
    assert tracker.last_step("x", "loss") is None
    assert tracker.log_report(tmp_path) == ""
    assert list(tmp_path.iterdir()) == []  # wrote nothing

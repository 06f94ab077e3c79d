"""The MLflow tracker's run writer (MLflowRun) and its SQLite-specific behaviour against a real
SQLite MLflow store (one store per module: creating one costs ~1 s). What every backend must do
(SQLite, PostgreSQL, a tracking server) is in test_tracker_conformance.py."""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from runner.tracking import NullRun, NullTracker, TrackingError, Tracker, open_tracker  # noqa: E402
from runner.tracking.mlflow_run import MLflowRun  # noqa: E402
from runner.tracking.mlflow_tracker import MLflowTracker, ensure_experiment  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def uri(workspace):
    return f"sqlite:///{workspace}/mlflow.db"


@pytest.fixture(scope="module")
def tracker(uri, workspace):
    """The runner's URI and artifact layout; the store built by prepare() as `ablate run` does."""
    tracker = MLflowTracker(uri, "test-exp", str(workspace / "mlartifacts"), flush_interval_s=0.05)
    tracker.prepare()
    return tracker


@pytest.fixture
def make(uri, workspace, tracker, request):
    """A run factory (open_run, with the tracker's writer options overridable per run); runs are
    finished at teardown."""
    made: list[MLflowRun] = []

    def _make(*, run_id=None, tags=None, params=None, **options) -> MLflowRun:
        owner = tracker
        if options:
            owner = MLflowTracker(uri, "test-exp", str(workspace / "mlartifacts"),
                                  **{"flush_interval_s": 0.05, **options})
        t = owner.open_run(run_id=run_id, name=request.node.name[:60], tags=tags or {"study": "s1"},
                           params=params or {})
        made.append(t)
        return t

    yield _make
    for t in made:
        try:
            t.finish()
        except Exception:
            pass


def history(uri, run_id, key):
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_metrics_params_tags_read_back(make, uri):
    t = make(params={"lr": 0.01, "encoder": "resnet50", "atrous": (6, 12, 18), "none": None})
    t.set_tags({"phase": "train", "gpu": 0})
    for step in range(1500):  # more than one log_batch chunk
        t.log_metrics({"loss": 1.0 / (step + 1), "miou": step * 1e-3}, step=step)
    t.flush()
    assert history(uri, t.run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(1500)]
    assert history(uri, t.run_id, "miou") == [(s, s * 1e-3) for s in range(1500)]
    run = MlflowClient(uri).get_run(t.run_id)
    assert run.data.params == {"lr": "0.01", "encoder": "resnet50", "atrous": "(6, 12, 18)", "none": "None"}
    assert run.data.tags["study"] == "s1" and run.data.tags["phase"] == "train" and run.data.tags["gpu"] == "0"
    assert run.info.status == "RUNNING"
    t.finish()
    assert MlflowClient(uri).get_run(t.run_id).info.status == "FINISHED"
    t.finish()  # idempotent


def test_artifact_location_and_artifact_upload(make, uri, workspace, tmp_path):
    t = make()
    f = tmp_path / "confusion.csv"
    f.write_text("a,b\n1,2\n")
    t.log_artifact(str(f), artifact_path="eval")
    t.finish()
    client = MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(t.run_id, "eval")] == ["eval/confusion.csv"]
    assert client.get_run(t.run_id).info.artifact_uri.startswith(str(workspace / "mlartifacts"))
    assert (workspace / "mlartifacts").is_dir()


def test_log_metrics_does_not_block(make, uri):
    # Idle writer during the measurement: nothing reaches the DB until flush().
    t = make(flush_interval_s=3600, max_batch=10**9)
    durations = []
    for step in range(2000):
        t0 = time.perf_counter()
        t.log_metrics({"loss": 0.5, "ce": 0.3, "depth": 0.2}, step=step)
        durations.append(time.perf_counter() - t0)
    assert MlflowClient(uri).get_metric_history(t.run_id, "loss") == []  # no write happened yet
    # the calls only queued: the blocking cost is measured in bench/logging_overhead.py, not asserted here
    print(f"log_metrics: {sum(durations) / len(durations) * 1e6:.1f} us per call on average")
    t.flush()
    assert len(history(uri, t.run_id, "loss")) == 2000


def test_exception_in_with_block_sets_failed(make, uri):
    with pytest.raises(ValueError):
        with make() as t:
            t.log_metrics({"loss": 1.0}, step=0)
            raise ValueError("diverged")
    run = MlflowClient(uri).get_run(t.run_id)
    assert run.info.status == "FAILED"
    assert history(uri, t.run_id, "loss") == [(0, 1.0)]  # drained before the status was set


def test_keyboard_interrupt_sets_killed(make, uri):
    with pytest.raises(KeyboardInterrupt):
        with make() as t:
            raise KeyboardInterrupt
    assert MlflowClient(uri).get_run(t.run_id).info.status == "KILLED"


def test_resume_same_run(make, uri):
    params = {"lr": 0.01, "epochs": 16}
    first = make(params=params)
    for step in range(10):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finish("KILLED")  # an interrupted trial

    again = make(run_id=first.run_id, params=params)  # identical params again: no error
    assert again.run_id == first.run_id
    again.finish("KILLED")
    resumed = make(run_id=first.run_id, tags={"resumed": "1"},
                   params={**params, "epochs": 20, "new_key": "x"})  # changed value: kept, warned
    assert resumed.run_id == first.run_id
    assert MlflowClient(uri).get_run(first.run_id).info.status == "RUNNING"
    for step in range(10, 20):
        resumed.log_metrics({"loss": float(step)}, step=step)
    resumed.finish()
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "epochs": "16", "new_key": "x"}
    assert run.data.tags["resumed"] == "1"
    assert history(uri, first.run_id, "loss") == [(s, float(s)) for s in range(20)]


def test_long_param_value_is_truncated(make, uri):
    t = make(params={"long": "x" * 10_000})
    assert 0 < len(MlflowClient(uri).get_run(t.run_id).data.params["long"]) < 10_000


def test_background_error_surfaces_on_flush(make, uri, monkeypatch):
    t = make(retries=2, retry_backoff_s=0.001)
    calls = []
    writer_may_fail = threading.Event()

    def broken(*args, **kwargs):
        writer_may_fail.wait(10)  # the write hangs until the test lets it fail
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(t.client, "log_batch", broken)
    t.log_metrics({"loss": 1.0}, step=0)  # returns while the write is still hanging: the step never waits
    assert calls == []
    writer_may_fail.set()
    with pytest.raises(TrackingError) as info:
        t.flush(timeout=10)
    assert isinstance(info.value.__cause__, OSError)
    assert len(calls) == 3 and t.dropped_points == 1
    t.flush()  # the error was reported once
    monkeypatch.undo()
    t.log_metrics({"loss": 2.0}, step=1)
    t.finish()
    assert history(uri, t.run_id, "loss") == [(1, 2.0)]


def test_invalid_metric_name_drops_only_that_key(make, uri):
    t = make()
    t.log_metrics({"loss": 1.0, "bad\nname": 2.0}, step=0)
    with pytest.raises(TrackingError):
        t.flush()
    assert history(uri, t.run_id, "loss") == [(0, 1.0)]


def test_nonfinite_values(make, uri):
    t = make()
    t.log_metrics({"loss": float("nan")}, step=0)
    t.log_metrics({"loss": 1.0}, step=1)
    t.flush()
    (s0, v0), (s1, v1) = history(uri, t.run_id, "loss")
    assert math.isnan(v0) and (s1, v1) == (1, 1.0)
    assert t.nonfinite_points == 1


def test_trackers_in_one_process_are_independent(make, uri):
    a, b = make(), make()
    for step in range(50):
        a.log_metrics({"loss": 1.0}, step=step)
        b.log_metrics({"loss": 2.0}, step=step)
    a.finish()
    b.finish("FAILED")
    assert {v for _, v in history(uri, a.run_id, "loss")} == {1.0}
    assert {v for _, v in history(uri, b.run_id, "loss")} == {2.0}
    assert MlflowClient(uri).get_run(b.run_id).info.status == "FAILED"


def test_end_run(make, tracker, uri):
    running = make()
    done = make()
    done.finish()
    assert tracker.end_run(running.run_id, "KILLED") is True
    assert tracker.end_run(done.run_id, "KILLED") is False
    client = MlflowClient(uri)
    assert client.get_run(running.run_id).info.status == "KILLED"
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert tracker.end_run("0" * 32, "FAILED") is False  # never created


def _methods(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def test_null_tracker_has_the_same_methods():
    assert _methods(MLflowRun) <= set(dir(NullRun))
    assert _methods(MLflowTracker) <= _methods(Tracker) <= set(dir(NullTracker))
    with NullTracker().open_run(run_id=None, name="n", tags={}, params={"a": 1}) as t:
        t.log_metrics({"loss": 1.0}, step=0)
        t.log_artifact("nope")
        t.set_tags({"a": "b"})
        t.flush()
        t.finish("FAILED")


def test_ensure_experiment_creates_restores_and_tolerates_a_concurrent_create(uri, workspace, monkeypatch):
    """The one place an experiment is made: created at a resolved plain path, the same id again,
    a deleted one restored, and a create lost to another worker answered with the winner's id."""
    client = MlflowClient(uri)
    relative = workspace / "sub" / ".." / "ens-art"
    exp_id = ensure_experiment(client, "ensure-exp", str(relative))
    exp = client.get_experiment(exp_id)
    assert exp.artifact_location.endswith(str(relative.resolve()))
    assert ".." not in exp.artifact_location
    assert ensure_experiment(client, "ensure-exp", str(relative)) == exp_id

    client.delete_experiment(exp_id)
    assert ensure_experiment(client, "ensure-exp") == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"

    other = MlflowClient(uri)  # another worker creates it between our lookup and our create
    real_create = client.create_experiment

    def create_lost(name, artifact_location=None):
        other.create_experiment(name)
        return real_create(name, artifact_location=artifact_location)  # raises: the name is taken

    monkeypatch.setattr(client, "create_experiment", create_lost)
    raced = ensure_experiment(client, "ensure-raced")
    assert raced == other.get_experiment_by_name("ensure-raced").experiment_id


def test_open_tracker_picks_the_backend(tmp_path):
    assert isinstance(open_tracker(None, "e", None), NullTracker)
    assert isinstance(open_tracker("none", "e", None), NullTracker)
    assert isinstance(open_tracker("None", "e", None), NullTracker)
    local = open_tracker(f"sqlite:///{tmp_path}/sub/../mlflow.db", "e", None)
    assert isinstance(local, MLflowTracker)
    assert local.uri == f"sqlite:///{tmp_path}/mlflow.db"  # the plain text MLflow reads
    assert local.artifact_location == (tmp_path / "mlartifacts").as_uri()
    served = open_tracker("http://127.0.0.1:5000", "e", (tmp_path / "mlartifacts").as_uri())
    assert served.artifact_location is None  # artifacts go through the server
    assert not (tmp_path / "mlflow.db").exists()  # opening touches nothing


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_store_that_cannot_be_used_is_bad_input_naming_the_option(tmp_path, monkeypatch):
    from ablations.errors import InputError

    pytest.importorskip("psycopg2")
    url = f"postgresql+psycopg2://ablate:s3cret-pw@127.0.0.1:{_free_port()}/mlflow"
    with pytest.raises(InputError) as info:
        open_tracker(url, "e", None).prepare()
    message = str(info.value)
    assert message.startswith("--tracking-uri postgresql+psycopg2://ablate:***@127.0.0.1:"), message
    assert "cannot reach the MLflow tracking store" in message and "s3cret-pw" not in message
    assert "\n" not in message

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # ablate's CLI bounds them too
    server = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(InputError, match=f"^--tracking-uri {server}: cannot reach the MLflow tracking store: "):
        open_tracker(server, "e", None).prepare()

    damaged = tmp_path / "mlflow.db"
    damaged.write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match="not an SQLite database"):
        open_tracker(f"sqlite:///{damaged}", "e", None).prepare()
    assert damaged.read_bytes() == b"not a database at all" * 100  # left as it was


def test_the_report_makes_no_store_where_none_exists(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# r\n")
    assert open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "e", None).log_report(report) == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_find_runs_takes_values_with_quotes(tracker, make):
    quoted = make(tags={"note": "it's"})
    double = make(tags={"note": 'say "hi"'})
    assert tracker.find_runs("note", "it's") == [(quoted.run_id, "RUNNING")]
    assert tracker.find_runs("note", 'say "hi"') == [(double.run_id, "RUNNING")]
    with pytest.raises(ValueError):
        tracker.find_runs("note", "it's \"both\"")


def test_a_run_that_is_no_longer_ours_is_not_written_to(make_fenced, uri):
    """``may_write`` (the worker's lease check) is asked before every write: once it says no,
    nothing queued is written and no status is set; ``abandon()`` does the same at once."""
    ours = [True]
    t = make_fenced(lambda: ours[0])
    t.log_metrics({"loss": 1.0}, step=1)
    t.flush()
    ours[0] = False  # another worker took the trial over
    t.log_metrics({"loss": 2.0}, step=2)
    t.set_tags({"late": "1"})
    t.finish("KILLED")
    run = MlflowClient(uri).get_run(t.run_id)
    assert history(uri, t.run_id, "loss") == [(1, 1.0)]
    assert run.info.status == "RUNNING" and "late" not in run.data.tags  # left to the new owner

    dropped = make_fenced(None)
    dropped.log_metrics({"loss": 3.0}, step=1)
    dropped.abandon()
    dropped.finish("FAILED")  # after abandon: nothing
    assert history(uri, dropped.run_id, "loss") == []
    assert MlflowClient(uri).get_run(dropped.run_id).info.status == "RUNNING"


@pytest.fixture
def make_fenced(tracker, request):
    def _make(may_write):
        return tracker.open_run(run_id=None, name=request.node.name[:60], tags={}, params={}, may_write=may_write)

    return _make


def test_points_queued_at_a_normal_exit_are_written(tracker, uri, kit):
    """A process that exits without finish() (an exception in the caller, sys.exit) still writes
    what it queued (atexit drain); the run stays RUNNING for the next owner to end or resume."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from runner.tracking.mlflow_tracker import MLflowTracker\n"
              f"run = MLflowTracker({uri!r}, 'test-exp', flush_interval_s=3600).open_run(\n"
              "    run_id=None, name='exits', tags={}, params={})\n"
              "for step in range(100):\n"
              "    run.log_metrics({'loss': float(step)}, step=step)\n"
              "print(run.run_id)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(kit.REPO)})
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    assert history(uri, run_id, "loss") == [(s, float(s)) for s in range(100)]
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"

"""TrialTracker against a real SQLite MLflow store (one store per module: creating one costs ~1 s)."""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from runner.tracking.mlflow_tracker import (  # noqa: E402
    NullTracker, TrackingError, TrialTracker, ensure_experiment, mark_run_terminated)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def uri(workspace):
    return f"sqlite:///{workspace}/mlflow.db"


@pytest.fixture
def make(uri, workspace, request):
    """A tracker factory with the runner's URI and artifact layout; trackers are finished at teardown."""
    made: list[TrialTracker] = []

    def _make(**kw) -> TrialTracker:
        kw.setdefault("run_name", request.node.name[:60])
        kw.setdefault("tags", {"study": "s1"})
        kw.setdefault("flush_interval_s", 0.05)
        kw.setdefault("artifact_location", str(workspace / "mlartifacts"))
        t = TrialTracker(uri, "test-exp", **kw)
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
    t = make()
    t.log_params({"lr": 0.01, "encoder": "resnet50", "atrous": (6, 12, 18), "none": None})
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
    first = make()
    first.log_params(params)
    for step in range(10):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finish("KILLED")  # an interrupted trial

    resumed = make(run_id=first.run_id, tags={"resumed": "1"})
    assert resumed.run_id == first.run_id
    assert MlflowClient(uri).get_run(first.run_id).info.status == "RUNNING"
    resumed.log_params(params)  # identical params again: no error
    resumed.log_params({**params, "epochs": 20, "new_key": "x"})  # changed value: kept, warned
    for step in range(10, 20):
        resumed.log_metrics({"loss": float(step)}, step=step)
    resumed.finish()
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "epochs": "16", "new_key": "x"}
    assert run.data.tags["resumed"] == "1"
    assert history(uri, first.run_id, "loss") == [(s, float(s)) for s in range(20)]


def test_long_param_value_is_truncated(make, uri):
    t = make()
    t.log_params({"long": "x" * 10_000})
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


def test_mark_run_terminated(make, uri):
    running = make()
    done = make()
    done.finish()
    assert mark_run_terminated(uri, running.run_id, "KILLED") is True
    assert mark_run_terminated(uri, done.run_id, "KILLED") is False
    client = MlflowClient(uri)
    assert client.get_run(running.run_id).info.status == "KILLED"
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert mark_run_terminated(uri, "0" * 32, "FAILED") is False  # never created


def test_null_tracker_has_the_same_methods():
    public = {n for n in dir(TrialTracker) if not n.startswith("_")}
    assert public <= set(dir(NullTracker))
    with NullTracker() as t:
        t.log_params({"a": 1})
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

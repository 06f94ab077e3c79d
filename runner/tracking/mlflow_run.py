"""MLflow tracking for one trial: one trial is one MLflow run.

`TrialTracker` never writes to MLflow from the training thread for metrics, tags or artifacts:
`log_metrics` appends to an in-memory queue and returns in microseconds, and a single daemon
thread per tracker drains the queue with `MlflowClient.log_batch` every `flush_interval_s`
seconds, or sooner when `max_batch` items are waiting. MLflow's SQL store commits once per call,
so per-point `log_metric` blocks ~2-20 ms per point; batching makes it ~1,000 points per commit.

Several trackers may live in one process (several trials per GPU): each has its own
`MlflowClient` and its own thread; the global fluent state (`mlflow.start_run`) is never used.

Failures and crashes:

* A write that fails is retried a few times with exponential backoff. If it still fails, the
  chunk is dropped (counted in `dropped_points`), the error is kept, and it is re-raised as a
  `TrackingError` (with the MLflow error as `__cause__`) by the next `flush()` or `finish()`.
  The training step itself never sees it and never waits for it.
* `kill -9`, OOM kill or power loss: whatever was queued but not yet written is lost, at most
  `flush_interval_s` worth of points (plus one write in flight). The run stays RUNNING in MLflow;
  the runner finds the crashed trial through its own lease/heartbeat and calls
  `mark_run_terminated`, or resumes the trial with `TrialTracker(..., run_id=...)`.
  The result database, not MLflow, is the system of record: MLflow is a view for humans.
* Normal interpreter exit without `finish()`: an `atexit` hook drains every live tracker
  (bounded by `_ATEXIT_TIMEOUT_S`) but does not set a terminal status.
* NaN metric values are stored as NaN by MLflow's SQL store; +/-inf are accepted but stored
  clamped to +/-1.797e308. Both are logged as is and counted in `nonfinite_points`.
* A run another process took over (a worker that was stopped past its lease): `may_write`, a
  fence the owner passes in, is asked right before every write, `finish`'s status included; once
  it says no, nothing more is written and what is queued is dropped. `abandon()` does the same
  from the training thread. MLflow has no conditional write, so the fence narrows the race to
  the moment between the check and the write; it does not close it.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

# MLflow's documented limits (mlflow.utils.validation); kept here so importing this module does
# not import mlflow (1-2 s). MLflow 3.x allows 6,000-character param values, older servers 500:
# values are truncated to _MAX_PARAM_VAL_LENGTH, which we read from mlflow when it is loaded.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_TAG_VAL_LENGTH = 5000
_ATEXIT_TIMEOUT_S = 10.0

T = TypeVar("T")


class TrackingError(RuntimeError):
    """A background MLflow write failed after its retries; `__cause__` is the last error."""


def _max_param_val_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except Exception:  # pragma: no cover - very old or very new mlflow
        return 500


_PERMANENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"}


def _is_permanent(exc: BaseException) -> bool:
    """An MLflow error that a retry cannot fix (bad metric name, deleted run, ...)."""
    return getattr(exc, "error_code", None) in _PERMANENT_ERROR_CODES


def _retry(fn: Callable[[], T], what: str, retries: int, backoff_s: float) -> T:
    """Call fn, retrying `retries` times with exponential backoff (SQLite "database is locked");
    permanent errors (see `_is_permanent`) are raised at once."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == retries or _is_permanent(exc):
                raise
            delay = backoff_s * (2**attempt)
            logger.debug("MLflow %s failed (%s); retry %d in %.2fs", what, exc, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def is_tracking_server(uri: str) -> bool:
    """Is `uri` an MLflow tracking server (http/https) rather than a store opened directly?"""
    return uri.split(":", 1)[0].lower() in ("http", "https")


_warned_local_artifacts: set[tuple[str, str]] = set()


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The id of MLflow experiment `name`, made ready for new runs; the one place ablate creates
    an experiment (`prepare_workspace`, `TrialTracker`, the report run).

    Created at `artifact_location` when missing (a plain path is resolved to an absolute one; a
    URI such as ``file:///...`` is kept as given; None lets the tracking server choose). A
    concurrent create by another worker or machine is tolerated (the experiment it made is used),
    and an experiment deleted in the UI is restored rather than failing every run. An existing
    experiment keeps its location (MLflow cannot move it): one on a local path behind a tracking
    server is used as it is, with a warning."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        if artifact_location and "://" not in artifact_location:
            artifact_location = str(Path(artifact_location).expanduser().resolve())
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another worker or `ablate run` created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        logger.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    _warn_local_artifacts(client, exp)
    return exp.experiment_id


def _warn_local_artifacts(client, exp) -> None:
    """Once per process and experiment: an experiment made before its artifacts went through the
    tracking server (file:// location) still has its runs write artifacts to that path on the
    machine that logs them, and the server's UI shows them only where it can read that path."""
    uri, location = getattr(client, "tracking_uri", "") or "", exp.artifact_location or ""
    if not is_tracking_server(uri) or not (location.startswith("file:") or location.startswith("/")):
        return
    if (uri, exp.name) in _warned_local_artifacts:
        return
    _warned_local_artifacts.add((uri, exp.name))
    logger.warning("MLflow experiment %r keeps its artifacts at %s, not on the tracking server %s: "
                   "sample images and reports are written there and the server's UI shows them only "
                   "if it can read that path; rename the experiment (mlflow experiments rename) so the "
                   "next run creates one whose artifacts go through the server", exp.name, location, uri)


class NullTracker:
    """Same methods as `TrialTracker`; does nothing. Used for runs without MLflow."""

    run_id: str = ""
    dropped_points = 0
    nonfinite_points = 0

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def abandon(self) -> None:
        pass

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        pass


_live_trackers: "weakref.WeakSet[TrialTracker]" = weakref.WeakSet()


@atexit.register
def _drain_live_trackers() -> None:
    # Daemon threads are still alive while atexit hooks run, so a flush still completes.
    for tracker in list(_live_trackers):
        try:
            tracker.flush(timeout=_ATEXIT_TIMEOUT_S)
        except Exception as exc:  # never raise from interpreter shutdown
            logger.warning("MLflow run %s: data lost at exit: %s", tracker.run_id, exc)


class TrialTracker:
    """One MLflow run for one trial, written from a background thread.

    `tracking_uri` e.g. ``sqlite:///<workspace>/mlflow.db``; `artifact_location` (e.g.
    ``<workspace>/mlartifacts``) is used only when the experiment is created here. Without
    `run_id` a new run is started; with `run_id` that run is reopened (resume of an interrupted
    trial): same run, status set back to RUNNING, earlier metrics kept. Methods other than
    `flush`/`finish` are meant to be called from one thread (the training thread).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        *,
        run_name: str,
        tags: dict[str, str],
        run_id: str | None = None,
        artifact_location: str | None = None,
        flush_interval_s: float = 2.0,
        max_batch: int = 1000,
        retries: int = 4,
        retry_backoff_s: float = 0.1,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.flush_interval_s = float(flush_interval_s)
        self.max_batch = max(1, int(max_batch))
        self._retries = retries
        self._backoff_s = retry_backoff_s
        self.client = MlflowClient(tracking_uri)
        self.dropped_points = 0  # metric points given up on after retries
        self.nonfinite_points = 0  # NaN/inf values logged (NaN kept, inf clamped by MLflow)
        self._queue: deque = deque()  # ("m", key, value, ts, step) | ("t", key, value) | ("a", path, apath) | Event
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closing = False
        self._finished = False
        self._may_write = may_write
        self._refused = False  # the fence said no once: the run is someone else's from now on

        experiment_id = self._call(lambda: ensure_experiment(self.client, experiment, artifact_location),
                                   "get/create experiment")
        str_tags = {str(k): str(v) for k, v in tags.items()}
        if run_id is None:
            run = self._call(
                lambda: self.client.create_run(experiment_id, run_name=run_name, tags=str_tags), "create_run"
            )
            self.run_id = run.info.run_id
        else:
            run = self.client.get_run(run_id)  # raises if it does not exist
            if run.info.lifecycle_stage == "deleted":
                self.client.restore_run(run_id)
            self.run_id = run_id
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen run")
            if str_tags:
                self._write_tags(list(str_tags.items()))

        self._thread = threading.Thread(
            target=self._loop, name=f"mlflow-tracker-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        _live_trackers.add(self)

    # ----------------------------------------------------------------- training-thread API

    def log_params(self, params: dict) -> None:
        """Log a flat config, synchronously (once per trial). Values are stringified and
        truncated to MLflow's limit. Params already on the run (resume) are skipped; if one was
        logged with a different value it is kept and a warning is printed (MLflow forbids
        changing a param)."""
        from mlflow.entities import Param

        limit = _max_param_val_length()
        existing = self._call(lambda: self.client.get_run(self.run_id).data.params, "get_run")
        new: list[Param] = []
        for key, value in params.items():
            key, text = str(key), str(value)
            if len(text) > limit:
                logger.warning("param %s: value of %d chars truncated to %d", key, len(text), limit)
                text = text[:limit]
            if key in existing:
                if existing[key] != text:
                    logger.warning(
                        "run %s: param %s already logged as %r, not changed to %r",
                        self.run_id, key, existing[key], text,
                    )
                continue
            new.append(Param(key, text))
        for i in range(0, len(new), _MAX_PARAMS_TAGS_PER_BATCH):
            chunk = new[i : i + _MAX_PARAMS_TAGS_PER_BATCH]
            self._call(lambda: self.client.log_batch(self.run_id, params=chunk, synchronous=True), "log params")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics for `step`; returns at once (microseconds), never touches the DB."""
        ts = int(time.time() * 1000)
        append = self._queue.append
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                self.nonfinite_points += 1
            append(("m", key, value, ts, step))
        if len(self._queue) >= self.max_batch:
            self._wake.set()

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Queue a file (or directory) upload; the file must still exist when it is written."""
        self._queue.append(("a", str(Path(path).resolve()), artifact_path))
        self._wake.set()

    def set_tags(self, tags: dict) -> None:
        """Queue tags (values stringified); written in order with the metrics."""
        for key, value in tags.items():
            self._queue.append(("t", str(key), str(value)[:_MAX_TAG_VAL_LENGTH]))

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is written (or dropped after retries).

        Raises `TrackingError` for a background write that failed since the last flush, and
        `TimeoutError` if the writes take longer than `timeout` seconds."""
        if self._thread.is_alive():
            barrier = threading.Event()
            self._queue.append(barrier)
            self._wake.set()
            if not barrier.wait(timeout):
                raise TimeoutError(f"MLflow run {self.run_id}: flush did not finish in {timeout}s")
        elif self._queue:  # thread gone (should not happen): drain here
            self._drain()
        self._raise_pending_error()

    def finish(self, status: str = "FINISHED") -> None:
        """Drain the queue, stop the thread, set the terminal status. Idempotent.

        The status is set even when earlier writes failed; the failure is raised afterwards."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if self._finished:
            return
        self._finished = True
        _live_trackers.discard(self)
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._drain()  # anything appended while the thread was stopping
        if self._fenced():
            return
        try:
            self._call(lambda: self.client.set_terminated(self.run_id, status), "set_terminated")
        except Exception as exc:
            self._keep_error(exc, f"set status {status}")
        self._raise_pending_error()

    def abandon(self) -> None:
        """Stop without writing anything more: no queued point, tag or artifact, no status.

        For a run that is no longer ours (another worker took it over and writes to it now)."""
        self._refused = True
        if self._finished:
            return
        self._finished = True
        _live_trackers.discard(self)
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._drain()  # sets the flush barriers still queued; writes nothing

    def __enter__(self) -> "TrialTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
            return
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.finish(status)
        except Exception as track_exc:  # do not hide the training error behind a tracking one
            logger.warning("MLflow run %s: %s", self.run_id, track_exc)

    # ----------------------------------------------------------------- background thread

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as exc:  # keep the thread alive whatever happens
                self._keep_error(exc, "background drain")
            if self._closing and not self._queue:
                return

    def _drain(self) -> None:
        """Write everything in the queue, in order, in chunks within MLflow's batch limits."""
        metrics: list[tuple] = []
        tags: list[tuple[str, str]] = []

        def write_pending() -> None:
            if (metrics or tags) and self._fenced():
                metrics.clear()
                tags.clear()
            if metrics:
                self._write_metrics(metrics)
                metrics.clear()
            if tags:
                self._write_tags(tags)
                tags.clear()

        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, threading.Event):
                write_pending()
                item.set()
            elif item[0] == "m":
                metrics.append(item)
                if len(metrics) >= _MAX_METRICS_PER_BATCH:
                    write_pending()
            elif item[0] == "t":
                tags.append((item[1], item[2]))
                if len(tags) >= _MAX_PARAMS_TAGS_PER_BATCH:
                    write_pending()
            else:  # artifact
                write_pending()
                if not self._fenced():
                    self._write_artifact(item[1], item[2])
        write_pending()

    def _fenced(self) -> bool:
        """True when writes are refused: abandoned, or ``may_write`` says the run is not ours.

        A fence that cannot answer (its database is briefly unreachable) does not refuse: data
        is not dropped on a doubt, only on a takeover the fence has seen."""
        if self._refused:
            return True
        if self._may_write is None:
            return False
        try:
            self._refused = not self._may_write()
        except Exception as exc:  # noqa: BLE001 - see above
            logger.warning("MLflow run %s: ownership check failed (%s); writing", self.run_id, exc)
            return False
        if self._refused:
            logger.warning("MLflow run %s: taken over by another worker; nothing more is written", self.run_id)
        return self._refused

    def _write_metrics(self, items: list[tuple]) -> None:
        from mlflow.entities import Metric

        batch = [Metric(k, v, ts, step) for _, k, v, ts, step in items]
        try:
            self._call(lambda: self.client.log_batch(self.run_id, metrics=batch, synchronous=True), "log_batch")
        except Exception as exc:
            keys = {m.key for m in batch}
            if _is_permanent(exc) and len(keys) > 1:
                # e.g. one invalid metric name: write key by key so only the bad key is dropped
                for key in keys:
                    self._write_metrics([item for item in items if item[1] == key])
                return
            self.dropped_points += len(batch)
            self._keep_error(exc, f"log_batch of {len(batch)} metric points (dropped)")

    def _write_tags(self, items: list[tuple[str, str]]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in items]
        try:
            self._call(lambda: self.client.log_batch(self.run_id, tags=batch, synchronous=True), "log_batch")
        except Exception as exc:
            self._keep_error(exc, f"log_batch of {len(batch)} tags (dropped)")

    def _write_artifact(self, path: str, artifact_path: str | None) -> None:
        upload = self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact
        try:
            self._call(lambda: upload(self.run_id, path, artifact_path), "log_artifact")
        except Exception as exc:
            self._keep_error(exc, f"log_artifact {path}")

    # ----------------------------------------------------------------- helpers

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return _retry(fn, what, self._retries, self._backoff_s)

    def _keep_error(self, exc: BaseException, what: str) -> None:
        logger.warning("MLflow run %s: %s failed: %s", getattr(self, "run_id", "?"), what, exc)
        wrapped = TrackingError(f"MLflow run {getattr(self, 'run_id', '?')}: {what} failed: {exc}")
        wrapped.__cause__ = exc
        with self._error_lock:
            if self._error is None:  # keep the first; later ones are usually the same cause
                self._error = wrapped

    def _raise_pending_error(self) -> None:
        with self._error_lock:
            error, self._error = self._error, None
        if error is not None:
            raise error


def mark_run_terminated(tracking_uri: str, run_id: str, status: str = "KILLED") -> bool:
    """Set a crashed trial's run to `status` (KILLED/FAILED) if it is still RUNNING/SCHEDULED.

    Returns True when the status was changed; False when the run was already terminal or does
    not exist (the trial crashed before its run was created)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    if run.info.status not in ("RUNNING", "SCHEDULED"):
        return False
    client.set_terminated(run_id, status)
    return True

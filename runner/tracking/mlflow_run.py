"""One MLflow run written from a background thread: :class:`MLflowRun`, the ``TrialRun`` of
:class:`runner.tracking.mlflow_tracker.MLflowTracker` (which creates or reopens the run).

`MLflowRun` never writes to MLflow from the training thread for metrics, tags or artifacts:
`log_metrics` appends to an in-memory queue and returns in microseconds, and a single daemon
thread per run drains the queue with `MlflowClient.log_batch` every `flush_interval_s`
seconds, or sooner when `max_batch` items are waiting. MLflow's SQL store commits once per call,
so per-point `log_metric` blocks ~2-20 ms per point; batching makes it ~1,000 points per commit.

Several runs may live in one process (several trials per GPU): each has its own `MlflowClient`
and its own thread; the global fluent state (`mlflow.start_run`) is never used.

Failures and crashes:

* A write that fails is retried a few times with exponential backoff. If it still fails, the
  chunk is dropped (counted in `dropped_points`), the error is kept, and it is re-raised as a
  `TrackingError` (with the MLflow error as `__cause__`) by the next `flush()` or `finish()`.
  The training step itself never sees it and never waits for it.
* `kill -9`, OOM kill or power loss: whatever was queued but not yet written is lost, at most
  `flush_interval_s` worth of points (plus one write in flight). The run stays RUNNING in MLflow;
  the runner finds the crashed trial through its own lease/heartbeat and ends the run
  (`MLflowTracker.end_run`) or resumes it (`MLflowTracker.open_run(run_id=...)`).
  The result database, not MLflow, is the system of record: MLflow is a view for humans.
* A resumed run replays the steps after its checkpoint, which the killed attempt may have logged
  already; MLflow keeps every point it is given, so they would show twice in the step history.
  `logged` (each metric key's last step in the run when it was reopened) drops such points.
* Normal interpreter exit without `finish()`: an `atexit` hook drains every live run
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
from typing import Callable, Optional, TypeVar

from runner.tracking.base import TERMINAL_STATUSES, TrackingError

logger = logging.getLogger(__name__)

# MLflow's documented limits (mlflow.utils.validation); kept here so importing this module does
# not import mlflow (1-2 s).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_TAG_VAL_LENGTH = 5000
_ATEXIT_TIMEOUT_S = 10.0

T = TypeVar("T")


_PERMANENT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"}


def is_permanent(exc: BaseException) -> bool:
    """An MLflow error that a retry cannot fix (bad metric name, deleted run, ...)."""
    return getattr(exc, "error_code", None) in _PERMANENT_ERROR_CODES


def retry_call(fn: Callable[[], T], what: str, retries: int, backoff_s: float) -> T:
    """Call fn, retrying `retries` times with exponential backoff (SQLite "database is locked",
    a server restarting); permanent errors (see `is_permanent`) are raised at once."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == retries or is_permanent(exc):
                raise
            delay = backoff_s * (2**attempt)
            logger.debug("MLflow %s failed (%s); retry %d in %.2fs", what, exc, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


_live_runs: "weakref.WeakSet[MLflowRun]" = weakref.WeakSet()


@atexit.register
def _drain_live_runs() -> None:
    # Daemon threads are still alive while atexit hooks run, so a flush still completes.
    for run in list(_live_runs):
        try:
            run.flush(timeout=_ATEXIT_TIMEOUT_S)
        except Exception as exc:  # never raise from interpreter shutdown
            logger.warning("MLflow run %s: data lost at exit: %s", run.run_id, exc)


class MLflowRun:
    """The open MLflow run ``run_id``, written through ``client`` (its own ``MlflowClient``) from a
    background thread. Made by :meth:`MLflowTracker.open_run`, which has created or reopened the
    run and logged its params. Methods other than `flush`/`finish` are meant to be called from one
    thread (the training thread).

    ``logged``: the last step each metric key already has in the run (a reopened run); points at
    or before it are dropped (see the module docstring). ``may_write``: the owner's fence.
    """

    def __init__(
        self,
        client,
        run_id: str,
        *,
        logged: Optional[dict[str, int]] = None,
        may_write: Optional[Callable[[], bool]] = None,
        flush_interval_s: float = 2.0,
        max_batch: int = 1000,
        retries: int = 4,
        retry_backoff_s: float = 0.1,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_interval_s = float(flush_interval_s)
        self.max_batch = max(1, int(max_batch))
        self._retries = retries
        self._backoff_s = retry_backoff_s
        self.dropped_points = 0  # metric points given up on after retries
        self.nonfinite_points = 0  # NaN/inf values logged (NaN kept, inf clamped by MLflow)
        self._logged = dict(logged or {})
        self._queue: deque = deque()  # ("m", key, value, ts, step) | ("t", key, value) | ("a", path, apath) | Event
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closing = False
        self._finished = False
        self._may_write = may_write
        self._refused = False  # the fence said no once: the run is someone else's from now on
        self._thread = threading.Thread(target=self._loop, name=f"mlflow-run-{run_id[:8]}", daemon=True)
        self._thread.start()
        _live_runs.add(self)

    # ----------------------------------------------------------------- training-thread API

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics for `step`; returns at once (microseconds), never touches the DB.
        A key whose step the reopened run already holds is dropped (see ``logged``)."""
        ts = int(time.time() * 1000)
        append = self._queue.append
        logged = self._logged
        for key, value in metrics.items():
            if logged and step <= logged.get(key, -1):
                continue
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
        if not self._stop_writer():
            return
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
        self._stop_writer()  # the drain only sets the flush barriers still queued: nothing is written

    def _stop_writer(self) -> bool:
        """Stop the writer thread and drain what was appended while it stopped (a refused run
        drains without writing). False when the run was already finished (idempotence)."""
        if self._finished:
            return False
        self._finished = True
        _live_runs.discard(self)
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._drain()
        return True

    def __enter__(self) -> "MLflowRun":
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
            if is_permanent(exc) and len(keys) > 1:
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
        return retry_call(fn, what, self._retries, self._backoff_s)

    def _keep_error(self, exc: BaseException, what: str) -> None:
        logger.warning("MLflow run %s: %s failed: %s", self.run_id, what, exc)
        wrapped = TrackingError(f"MLflow run {self.run_id}: {what} failed: {exc}")
        wrapped.__cause__ = exc
        with self._error_lock:
            if self._error is None:  # keep the first; later ones are usually the same cause
                self._error = wrapped

    def _raise_pending_error(self) -> None:
        with self._error_lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

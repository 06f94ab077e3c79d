"""The tracking interface: what the worker and the report command ask of an experiment tracker.

Why an interface: MLflow is how runs are browsed, but the result store is the system of record, so
nothing else in ablate should know MLflow's API (its calls used to be spread over nine modules).
Like Ray Tune's ``LoggerCallback``, a tracker is one object per experiment (study file + profile)
that opens one run per trained config; another tracker (W&B, TensorBoard, none) is one more class
here and one more branch in :func:`runner.tracking.open_tracker`.

Contracts every implementation keeps:

* ``TrialRun.log_metrics`` never blocks the training step for more than microseconds (queue it);
* ``finish`` is idempotent and sets a terminal status even when earlier writes failed;
* a run left RUNNING by a killed process is ended by the next owner (``end_run``) or resumed by
  ``open_run(run_id=...)``, so no run stays RUNNING forever.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Protocol

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrackingError(RuntimeError):
    """A call to the tracker failed (after its retries); ``__cause__`` is the tracker's own error.

    Raised by ``open_run``/``find_runs``/``end_run``/``last_step``, and by a run's ``flush`` or
    ``finish`` for a background write that failed: callers catch this one type without importing
    the tracker's library."""


class TrialRun(Protocol):
    """One trained config's run in the tracker. Called from one thread (the training thread)."""

    run_id: str

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step``; returns at once (never waits for the tracker)."""

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        """Queue a file or directory upload; it must still exist when the upload runs."""

    def set_tags(self, tags: dict) -> None:
        """Queue tags (values stringified), written in order with the metrics."""

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until everything queued so far is written; raises ``TrackingError`` for a write
        that failed since the last flush, ``TimeoutError`` past ``timeout`` seconds."""

    def finish(self, status: str = "FINISHED") -> None:
        """Write what is queued, then set ``status`` (one of ``TERMINAL_STATUSES``). Idempotent."""

    def abandon(self) -> None:
        """Stop writing at once: nothing queued is written and no status is set (the run was
        taken over by another worker, which writes to it now)."""


class Tracker(Protocol):
    """One experiment: its runs, crash recovery and the report."""

    def prepare(self) -> None:
        """Create the tracker's stores and the experiment once, before workers start. The caller
        holds the workspace lock; a store that cannot be reached or opened is an ``InputError``."""

    def connect(self) -> None:
        """Load the tracker's library and open its store now (seconds on a busy machine): a
        worker does it before claiming a trial, so the trial's lease does not pay for it."""

    def open_run(self, *, run_id: Optional[str], name: str, tags: dict, params: dict,
                 may_write: Optional[Callable[[], bool]] = None) -> TrialRun:
        """Open a new run, or reopen ``run_id`` (a resumed trial keeps one run). ``may_write``:
        asked before every write; once it says no, nothing more is written (a lost lease)."""

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        """``(run_id, status)`` of the runs tagged ``tag=value``, oldest first."""

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        """End ``run_id`` with ``status`` if it is still running; False if it was not."""

    def last_step(self, run_id: str, metric: str) -> Optional[int]:
        """The highest step logged for ``metric`` in ``run_id``; None when it has none."""

    def log_report(self, report_dir: Path) -> str:
        """Log a rendered report directory; returns the run id that holds it ("" if none)."""


class NullRun:
    """A run that records nothing."""

    run_id = ""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def flush(self, timeout: Optional[float] = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def abandon(self) -> None:
        pass

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        pass


class NullTracker:
    """No tracking (``--tracking-uri none``, ``ablate train``, rehearsals): every call succeeds."""

    def prepare(self) -> None:
        pass

    def connect(self) -> None:
        pass

    def open_run(self, *, run_id: Optional[str], name: str, tags: dict, params: dict,
                 may_write: Optional[Callable[[], bool]] = None) -> NullRun:
        return NullRun()

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        return []

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        return False

    def last_step(self, run_id: str, metric: str) -> Optional[int]:
        return None

    def log_report(self, report_dir: Path) -> str:
        return ""

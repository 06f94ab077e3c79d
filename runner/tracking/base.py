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
from typing import Optional, Protocol

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrialRun(Protocol):
    """One trained config's run in the tracker."""

    run_id: str

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class Tracker(Protocol):
    """One experiment: its runs, crash recovery and the report."""

    def prepare(self) -> None:
        """Create the tracker's stores and the experiment once, before workers start."""

    def open_run(self, *, run_id: Optional[str], name: str, tags: dict, params: dict) -> TrialRun:
        """Open a new run, or reopen ``run_id`` (a resumed trial keeps one run)."""

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        """``(run_id, status)`` of the runs tagged ``tag=value``, oldest first."""

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        """End ``run_id`` with ``status`` if it is still running; False if it was not."""

    def last_step(self, run_id: str, metric: str) -> Optional[int]:
        """The highest step logged for ``metric`` (a resumed trial skips steps already logged)."""

    def log_report(self, report_dir: Path) -> str:
        """Log a rendered report directory; returns the run id that holds it."""


class NullRun:
    """A run that records nothing."""

    run_id = ""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


class NullTracker:
    """No tracking (``--tracking-uri none``, ``ablate train``, rehearsals): every call succeeds."""

    def prepare(self) -> None:
        pass

    def open_run(self, *, run_id: Optional[str], name: str, tags: dict, params: dict) -> NullRun:
        return NullRun()

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        return []

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        return False

    def last_step(self, run_id: str, metric: str) -> Optional[int]:
        return None

    def log_report(self, report_dir: Path) -> str:
        return ""

"""Experiment tracking behind one interface (:mod:`runner.tracking.base`): the worker, the scheduler
and the report command talk to a :class:`Tracker` only, and no module outside this package imports
mlflow. Importing the package does not import mlflow either (``ablate --help`` stays fast).

    tracker = open_tracker(uri, experiment, artifact_location)   # NullTracker for None / "none"
    tracker.prepare()                                   # once, under the workspace lock
    run = tracker.open_run(run_id=None, name=..., tags=..., params=...)
    run.log_metrics({"loss": 0.3}, step=12); run.finish("FINISHED")
"""
from __future__ import annotations

from typing import Optional

from runner.tracking.base import TERMINAL_STATUSES, NullRun, NullTracker, Tracker, TrackingError, TrialRun
from runner.tracking.mlflow_tracker import is_tracking_server

__all__ = ["TERMINAL_STATUSES", "NullRun", "NullTracker", "Tracker", "TrackingError", "TrialRun",
           "is_tracking_server", "open_tracker"]


def open_tracker(uri: Optional[str], experiment: str, artifact_location: Optional[str]) -> Tracker:
    """The tracker for ``uri``: :class:`NullTracker` for None or ``"none"`` (tracking off), else
    an MLflow tracker (a tracking server, a database, or an SQLite file; see
    :class:`runner.tracking.mlflow_tracker.MLflowTracker`). Touches no store: see ``prepare``."""
    if uri is None or uri.strip().lower() == "none":
        return NullTracker()
    from runner.tracking.mlflow_tracker import MLflowTracker

    return MLflowTracker(uri, experiment, artifact_location)

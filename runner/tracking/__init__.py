"""Experiment tracking behind one interface (:mod:`runner.tracking.base`): the worker, the scheduler
and the report command talk to a :class:`Tracker` only, and no module outside this package imports
mlflow. Importing the package does not import mlflow either (``ablate --help`` stays fast).

    tracker = open_tracker(uri, experiment, artifact_location)   # NullTracker for None / "none"
    tracker.prepare()                                   # once, under the workspace lock
    run = tracker.open_run(run_id=None, name=..., tags=..., params=...)
    run.log_metrics({"loss": 0.3}, step=12); run.finish("FINISHED")
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from runner.tracking.base import TERMINAL_STATUSES, NullRun, NullTracker, Tracker, TrackingError, TrialRun
from runner.tracking.mlflow_tracker import is_tracking_server

__all__ = ["TERMINAL_STATUSES", "NullRun", "NullTracker", "Tracker", "TrackingError", "TrialRun",
           "is_tracking_server", "open_tracker", "workspace_tracking_file", "workspace_tracking_uri"]

WORKSPACE_STORE = "mlflow.db"  # the tracker store of a workspace without --tracking-uri


def workspace_tracking_file(workspace: Path) -> Path:
    """The file of a workspace's own tracker store (it may not exist yet)."""
    return Path(workspace) / WORKSPACE_STORE


def workspace_tracking_uri(workspace: Path) -> str:
    """The tracking URI of a workspace's own store. A workspace path MLflow's URI cannot carry
    (``?``, ``%``) is bad input naming the workspace and the character."""
    from runner.tracking.mlflow_files import mlflow_sqlite_uri

    return mlflow_sqlite_uri(workspace_tracking_file(workspace))


def open_tracker(uri: Optional[str], experiment: str, artifact_location: Optional[str]) -> Tracker:
    """The tracker for ``uri``: :class:`NullTracker` for None or ``"none"`` (tracking off), else
    an MLflow tracker (a tracking server, a database, or an SQLite file; see
    :class:`runner.tracking.mlflow_tracker.MLflowTracker`). Touches no store: see ``prepare``."""
    if uri is None or uri.strip().lower() == "none":
        return NullTracker()
    from runner.tracking.mlflow_tracker import MLflowTracker

    return MLflowTracker(uri, experiment, artifact_location)

"""What ablate logs to MLflow for one trial, on top of the generic asynchronous tracker.

One MLflow experiment per study file and profile, one run per trained config. Tags identify the
trial (``study``, ``variant``, ``seed``, ``config_hash``, ``trial_id``); params are the flat resolved
config; metrics are per-step losses (``loss``, ``loss_semseg``, ``loss_depth``) and per-epoch
validation metrics (IoU, SI-logRMSE, grader, per-class ``iou_<class>``, the epoch's mean losses
``epoch_loss*``, lr); artifacts are the resolved config and sample predictions. A resumed trial
reopens its MLflow run, so a killed-then-resumed trial is one run that ends FINISHED, and logs
only the steps that run does not hold yet: the killed attempt may have logged steps past the
checkpoint the trial resumes from, which the resumed attempt computes again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import yaml

from runner.tasks.mtl.config import Config as TrainConfig
from runner.tasks.mtl.data.miniscapes import CLASS_NAMES
from runner.orchestrate.session import Session
from runner.store import ClaimedRun
from runner.tracking.mlflow_tracker import TrialTracker


class TrialRunLog:
    """A :class:`TrialTracker` plus the trial-shaped calls the worker makes.

    ``logged``: the last step each metric key already has in the run (a resumed trial). Points
    at or before it are not logged again: a resume replays the steps after its checkpoint, which
    an earlier attempt may have logged (bit-identical on the CPU), and MLflow keeps every point it
    is given, so they would show twice in the step history."""

    def __init__(self, tracker: TrialTracker, logged: Optional[dict[str, int]] = None):
        self.tracker = tracker
        self.run_id = tracker.run_id
        self.logged = logged or {}

    def _new(self, metrics: dict, step: int) -> dict:
        if not self.logged:
            return metrics
        return {k: v for k, v in metrics.items() if step > self.logged.get(k, -1)}

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.tracker.log_metrics(self._new(metrics, step), step=step)

    def log_epoch(self, row: dict) -> None:
        """Validation metrics, lr and the epoch's mean losses at the epoch's last step.

        The mean losses are ``epoch_loss*``: under ``loss*`` they would land on the same step as
        that step's own loss (logged by ``log_metrics``), two values at one step of one series.
        """
        if row["step"] <= self._epochs_logged:
            return
        metrics = {k: row[k] for k in ("iou", "si_logrmse", "grader", "lr")}
        metrics.update({f"epoch_{k}": row[k] for k in ("loss", "loss_semseg", "loss_depth")})
        metrics["epoch"] = row["epoch"]
        metrics.update({f"iou_{name.replace(' ', '_')}": value for name, value in zip(CLASS_NAMES, row["iou_per_class"])})
        self.tracker.log_metrics(self._new(metrics, row["step"]), step=row["step"])

    def log_samples(self, model, val_split, config: TrainConfig, run_dir: Path) -> None:
        from runner.tasks.mtl.samples import save_prediction_samples

        path = save_prediction_samples(model, val_split, config, Path(run_dir) / "samples.png")
        self.tracker.log_artifact(str(path), "samples")

    def set_tags(self, tags: dict) -> None:
        self.tracker.set_tags(tags)

    def finish(self, status: str) -> None:
        self.tracker.finish(status)

    def abandon(self) -> None:
        self.tracker.abandon()


def _logged_steps(tracker: TrialTracker) -> dict[str, int]:
    """The last step of every metric key the run holds (one history read per key, on resume)."""
    client, run_id = tracker.client, tracker.run_id
    keys = client.get_run(run_id).data.metrics
    return {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1) for key in keys}


def open_tracker(session: Session, claimed: ClaimedRun, cells: list[dict], config: TrainConfig,
                 may_write: Optional[Callable[[], bool]] = None) -> TrialRunLog:
    """Open (or reopen, for a resumed trial) the trial's MLflow run. ``may_write``: the worker's
    lease check, asked by the tracker before every write (see :class:`TrialTracker`)."""
    first = cells[0] if cells else {"study": "-", "variant": "-", "seed": config.seed, "id": -1}
    tags = {"study": first["study"], "variant": first["variant"], "seed": str(first["seed"]),
            "config_hash": claimed.hash, "trial_id": str(first["id"]), "profile": session.profile,
            "ablate.studies": ",".join(sorted({c["study"] for c in cells})) or first["study"]}
    tracker = TrialTracker(session.tracking_uri, session.experiment,
                           run_name=f"{first['study']}/{first['variant']}/seed{first['seed']}", tags=tags,
                           run_id=claimed.mlflow_run_id, artifact_location=session.artifact_location,
                           may_write=may_write)
    logged = _logged_steps(tracker) if claimed.mlflow_run_id else {}
    tracker.log_params(config.flat())
    run_dir = session.run_dir(claimed.hash)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.yaml"
    from runner.atomic import write_text_atomic

    write_text_atomic(config_file, yaml.safe_dump(config.flat(), sort_keys=True))
    tracker.log_artifact(str(config_file))
    return TrialRunLog(tracker, logged)

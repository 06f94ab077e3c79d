"""What ablate logs to MLflow for one trial, on top of the generic asynchronous tracker.

One MLflow experiment per study file and profile, one run per trained config. Tags identify the
trial (``study``, ``variant``, ``seed``, ``config_hash``, ``trial_id``); params are the flat resolved
config; metrics are per-step losses (``loss``, ``loss_semseg``, ``loss_depth``) and per-epoch
validation metrics (IoU, SI-logRMSE, grader, per-class ``iou_<class>``, the epoch's mean losses
``epoch_loss*``, lr); artifacts are the resolved config and sample predictions. A resumed trial
reopens its MLflow run, so a killed-then-resumed trial is one run that ends FINISHED.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ablations.trial import TrainConfig
from runner.data.miniscapes import CLASS_NAMES
from runner.session import Session
from runner.store import ClaimedRun
from runner.tracking import TrialTracker


class TrialRunLog:
    """A :class:`TrialTracker` plus the trial-shaped calls the worker makes.

    ``logged_through`` (resume): the last step of the per-step series and of the per-epoch series
    that an earlier attempt already logged. A resume replays the steps after its checkpoint, and
    MLflow cannot drop a point: the replayed ones up to those steps are not logged again (the
    series keep the earlier attempt's values; the result store has the replay's)."""

    def __init__(self, tracker: TrialTracker, logged_through: tuple[int, int] = (0, 0)):
        self.tracker = tracker
        self.run_id = tracker.run_id
        self._steps_logged, self._epochs_logged = logged_through

    def log_metrics(self, metrics: dict, step: int) -> None:
        if step > self._steps_logged:
            self.tracker.log_metrics(metrics, step=step)

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
        self.tracker.log_metrics(metrics, step=row["step"])

    def log_samples(self, model, val_split, config: TrainConfig, run_dir: Path) -> None:
        from runner.samples import save_prediction_samples

        path = save_prediction_samples(model, val_split, config, Path(run_dir) / "samples.png")
        self.tracker.log_artifact(str(path), "samples")

    def set_tags(self, tags: dict) -> None:
        self.tracker.set_tags(tags)

    def finish(self, status: str) -> None:
        self.tracker.finish(status)


def open_tracker(session: Session, claimed: ClaimedRun, cells: list[dict], config: TrainConfig) -> TrialRunLog:
    first = cells[0] if cells else {"study": "-", "variant": "-", "seed": config.seed, "id": -1}
    tags = {"study": first["study"], "variant": first["variant"], "seed": str(first["seed"]),
            "config_hash": claimed.hash, "trial_id": str(first["id"]), "profile": session.profile,
            "ablate.studies": ",".join(sorted({c["study"] for c in cells})) or first["study"]}
    tracker = TrialTracker(session.tracking_uri, session.experiment,
                           run_name=f"{first['study']}/{first['variant']}/seed{first['seed']}", tags=tags,
                           run_id=claimed.mlflow_run_id, artifact_location=session.artifact_location)
    tracker.log_params(config.flat())
    run_dir = session.run_dir(claimed.hash)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.yaml"
    from runner.atomic import write_text_atomic

    write_text_atomic(config_file, yaml.safe_dump(config.flat(), sort_keys=True))
    tracker.log_artifact(str(config_file))
    logged = (0, 0)
    if claimed.mlflow_run_id is not None:  # reopened: what the earlier attempts logged
        logged = tuple(max((m.step for m in tracker.client.get_metric_history(tracker.run_id, key)), default=0)
                       for key in ("loss", "grader"))
    return TrialRunLog(tracker, logged)

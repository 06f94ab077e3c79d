"""A worker: pull the next ready trial, train it, record it; repeat until the chain is done.

Workers never talk to each other, only to the result store. Each pass they (1) materialise the
studies whose base is now known, (2) claim one claimable run with an atomic UPDATE, (3) train it
with a heartbeat thread renewing the lease, (4) write its outcome. A worker that dies leaves a
run whose lease expires; the next worker that passes by claims it and resumes from the
checkpoint. SIGINT/SIGTERM make the current trial checkpoint, flush its logs and stop.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ablations.errors import InputError
from runner.tasks.mtl.config import Config as TrainConfig
from runner.orchestrate.walk import StudyState, materialize, studies_in_scope
from runner.orchestrate.session import Session
from runner.store import ClaimedRun


class LeaseLost(RuntimeError):
    """Another worker took our run over (our lease expired): stop without writing anything."""


class TrialPruned(Exception):
    """Optuna's pruner stopped the trial on its intermediate grader."""


@dataclass
class WorkerOptions:
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    device: Optional[str] = None           # overrides config.device (e.g. "cuda:1")
    lease_s: float = 120.0
    poll_s: float = 1.0
    only: Optional[list[str]] = None
    step_flush: int = 200                  # step-loss rows buffered before a DB write
    # Replaces data preparation + model + training loop: (config, run_dir, hooks) -> TrainResult.
    # For scheduler tests and benchmarks that need many cheap trials; None = the real thing.
    trainer: Optional[Callable] = None


class StopFlag:
    """Set by a signal handler; read by the training loop every step."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


def install_signal_handlers(stop: StopFlag) -> None:
    """First SIGINT/SIGTERM: stop gracefully (checkpoint, flush). Second SIGINT: raise."""
    def handler(signum, _frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@dataclass
class WorkerSummary:
    trained: int = 0
    failed: int = 0
    interrupted: bool = False


def run_worker(session: Session, options: WorkerOptions, stop: StopFlag) -> WorkerSummary:
    summary = WorkerSummary()
    scope = studies_in_scope(session, options.only)
    _warm_up(session)
    while not stop:
        states = materialize(session, scope)
        claimed = _claim_next(session, states, options)
        if claimed is not None:
            outcome = execute(session, claimed, options, stop)
            summary.trained += outcome != "skipped"
            summary.failed += outcome == "failed"
            if outcome == "interrupted":
                summary.interrupted = True
                break
            continue
        if all(s.finished or s.blocked_by for s in states):
            break
        stop.event.wait(options.poll_s)
    summary.interrupted = summary.interrupted or bool(stop)
    return summary


def _warm_up(session: Session) -> None:
    """Import what a trial needs and open the MLflow store *before* claiming one.

    Both take seconds (tens of seconds with 8+ workers starting on 2 cores): done after the
    claim, they ate the lease before the first heartbeat and another worker took the run over
    (measured: 3 of 100 trials trained twice with 8 workers and a 60 s lease)."""
    import runner.tasks.mtl.assets  # noqa: F401 - torch, PIL
    import runner.tasks.mtl.pretrain  # noqa: F401
    import runner.tasks.mtl.train  # noqa: F401
    import runner.tracking.trial_log  # noqa: F401 - mlflow
    from mlflow.tracking import MlflowClient

    MlflowClient(session.tracking_uri).get_experiment_by_name(session.experiment)


def _claim_next(session: Session, states: list[StudyState], options: WorkerOptions) -> Optional[ClaimedRun]:
    store = session.store
    ready = [s for s in states if s.study_id is not None]
    for run_hash in store.claimable_runs([s.study_id for s in ready]):
        claimed = store.claim_run(run_hash, options.worker_id, options.lease_s)
        if claimed is not None:
            return claimed
    for state in ready:
        if state.spec.kind == "search" and not state.finished:
            from runner.orchestrate.search import claim_search_cell

            claimed = claim_search_cell(session, state, options.worker_id, options.lease_s)
            if claimed is not None:
                return claimed
    return None


def execute(session: Session, claimed: ClaimedRun, options: WorkerOptions, stop: StopFlag) -> str:
    """Train one claimed run to an outcome: done | failed | pruned | interrupted | skipped.

    Raises :class:`InputError` (bad data set, missing weights file) after putting the run back as
    ``interrupted``: bad input stops the whole run with exit code 2 instead of failing every
    trial that reads it; once the input is fixed, the next ``ablate run`` resumes the trial."""
    # The lease is renewed from the claim on: opening MLflow may take longer than the lease.
    heartbeat = _Heartbeat(session, claimed.hash, options.worker_id, options.lease_s)
    heartbeat.start()
    try:
        return _execute(session, claimed, options, stop, heartbeat)
    except BaseException as exc:
        # Anything that escapes (bad input, MLflow unreachable, a second Ctrl-C) hands the run
        # back at once instead of leaving it "running" until its lease expires.
        if isinstance(exc, InputError):
            reason = f"stopped on bad input: {exc}"
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (a second Ctrl-C): resumes from its last checkpoint"
        else:
            reason = f"worker stopped: {_failure_reason(exc)}"
        _safe(lambda: session.store.finish_run(claimed.hash, options.worker_id, "interrupted", error=reason))
        # The MLflow run too: a second Ctrl-C may land inside the graceful stop's own
        # tracker.finish() and cut it short; a no-op where the run was already ended.
        _safe(lambda: _end_mlflow_run(session, claimed.hash))
        raise
    finally:
        heartbeat.stop()


def _execute(session: Session, claimed: ClaimedRun, options: WorkerOptions, stop: StopFlag,
             heartbeat: "_Heartbeat") -> str:
    from runner.tasks.mtl.assets import prepare_splits
    from runner.tasks.mtl.pretrain import resolve_encoder_weights
    from runner.tracking.trial_log import open_tracker
    from runner.tasks.mtl.train import TrainHooks, TrialInterrupted, checkpoint_position, train

    store, worker = session.store, options.worker_id
    config = TrainConfig(**claimed.config)
    if options.device:
        config = config.model_copy(update={"device": options.device})
    run_dir = session.run_dir(claimed.hash)
    for leftover in run_dir.glob("checkpoint.pt.tmp*"):  # a checkpoint write that was killed
        leftover.unlink(missing_ok=True)
    cells = store.trials_of_run(claimed.hash)
    epochs_done, step = checkpoint_position(run_dir) or (0, 0)
    store.truncate_history(claimed.hash, after_step=step, after_epoch=epochs_done)  # replayed rows

    if claimed.resumed and claimed.mlflow_run_id is None:
        claimed = _adopt_mlflow_run(session, claimed)
    tracker = open_tracker(session, claimed, cells, config)
    store.update_run(claimed.hash, mlflow_run_id=tracker.run_id, checkpoint_path=str(run_dir / "checkpoint.pt"))
    optuna_link = None
    if cells and any(c["optuna_trial"] is not None and c["optuna_trial"] >= 0 for c in cells):
        from runner.orchestrate.search import OptunaLink

        optuna_link = OptunaLink.for_run(session, cells)

    step_rows: list[dict] = []

    def flush_steps() -> None:
        if heartbeat.lost.is_set():
            raise LeaseLost(f"run {claimed.hash}: lease lost to another worker")
        store.record_steps(claimed.hash, step_rows)
        step_rows.clear()

    def on_steps(rows: list[dict]) -> None:
        step_rows.extend(rows)
        for r in rows:
            tracker.log_metrics({"loss": r["loss"], "loss_semseg": r["loss_semseg"],
                                 "loss_depth": r["loss_depth"]}, step=r["step"])
        if len(step_rows) >= options.step_flush:
            flush_steps()

    def on_epoch(row: dict) -> None:
        flush_steps()
        db_row = {k: row[k] for k in ("epoch", "step", "wall_time_s", "iou", "si_logrmse", "grader",
                                      "loss", "loss_semseg", "loss_depth", "lr")}
        db_row["iou_per_class_json"] = json.dumps(row["iou_per_class"])
        store.record_epoch(claimed.hash, db_row)
        tracker.log_epoch(row)
        heartbeat.progress(epochs_done=row["epoch"], step=row["step"])
        if optuna_link is not None and optuna_link.should_prune(row["grader"], row["epoch"]):
            raise TrialPruned(f"pruned by Optuna after epoch {row['epoch']} (grader {row['grader']:.3f})")

    def on_progress(epoch: int, step: int) -> None:
        heartbeat.progress(epochs_done=epoch, step=step)

    hooks = TrainHooks(on_steps=on_steps, on_epoch=on_epoch, before_checkpoint=flush_steps,
                       should_stop=lambda: bool(stop) or heartbeat.lost.is_set(), on_progress=on_progress)
    model = None
    # MLflow is told the outcome before the result store: a worker killed in between leaves the
    # run "running" in the store, so it is claimed again and its MLflow run reopened and ended;
    # the other order could leave a finished trial's MLflow run RUNNING forever.
    try:
        if options.trainer is not None:
            result = options.trainer(config, run_dir, hooks)
        else:
            train_split, val_split = prepare_splits(config, session.workspace)
            resolved = resolve_encoder_weights(config, session.workspace)
            from models import build_model, count_parameters

            import torch

            torch.manual_seed(config.seed)
            model = build_model(resolved.to_model_config())
            store.update_run(claimed.hash, params=count_parameters(model))
            result = train(resolved, run_dir, train_split, val_split, hooks=hooks, model=model)
    except TrialInterrupted:
        _safe(flush_steps)
        _safe(lambda: tracker.finish("KILLED"))
        position = checkpoint_position(run_dir) or (0, 0)  # progress as of the checkpoint just written
        store.finish_run(claimed.hash, worker, "interrupted", error=f"interrupted ({stop.reason or 'lease'})",
                         epochs_done=position[0], step=position[1])
        return "interrupted"
    except LeaseLost:
        _safe(lambda: tracker.finish("KILLED"))
        return "interrupted"
    except TrialPruned as exc:
        _safe(flush_steps)
        tracker.set_tags({"ablate.pruned": "true"})
        _safe(lambda: tracker.finish("FINISHED"))
        store.finish_run(claimed.hash, worker, "pruned", error=str(exc))
        if optuna_link:
            optuna_link.tell_pruned()
        return "pruned"
    except InputError as exc:  # bad input, not a bad trial: execute() hands the run back
        _safe(flush_steps)
        tracker.set_tags({"ablate.error": f"stopped on bad input: {exc}"[:4000]})
        _safe(lambda: tracker.finish("KILLED"))
        raise
    except Exception as exc:  # noqa: BLE001 - every failure (NaN loss, OOM, a bug) is recorded
        reason = _failure_reason(exc)
        _safe(flush_steps)
        tracker.set_tags({"ablate.error": reason[:4000]})
        _safe(lambda: tracker.finish("FAILED"))
        store.finish_run(claimed.hash, worker, "failed", error=reason)
        if optuna_link:
            optuna_link.tell_failed()
        return "failed"
    except BaseException:  # a second Ctrl-C: stop now, but close the MLflow run; execute() hands the run back
        _safe(lambda: tracker.finish("KILLED"))
        raise

    if model is not None:
        _safe(lambda: tracker.log_samples(model, val_split, resolved, run_dir))
    _safe(lambda: tracker.finish("FINISHED"))
    if not store.finish_run(
            claimed.hash, worker, "done", final_grader=result.final["grader"], final_iou=result.final["iou"],
            final_si_logrmse=result.final["si_logrmse"], best_grader=result.best["grader"],
            best_iou=result.best["iou"], best_si_logrmse=result.best["si_logrmse"],
            best_epoch=result.best["epoch"], params=result.params, wall_time_s=result.wall_time_s,
            device=result.device, epochs_done=result.epochs, step=result.steps):
        return "skipped"  # our lease expired: the worker that took the run over records it
    if optuna_link:
        optuna_link.tell_done(result.final["grader"])
    return "done"


def _end_mlflow_run(session: Session, run_hash: str) -> None:
    """End the run's MLflow run KILLED if it is still RUNNING (its id is in the store)."""
    run = session.store.run(run_hash)
    if run and run.get("mlflow_run_id"):
        from runner.tracking.mlflow_tracker import mark_run_terminated

        mark_run_terminated(session.tracking_uri, run["mlflow_run_id"], "KILLED")


def _adopt_mlflow_run(session: Session, claimed: ClaimedRun) -> ClaimedRun:
    """An earlier attempt died after creating its MLflow run but before storing the run's id:
    find that run by its ``config_hash`` tag and resume it, so the trial keeps one identity and
    no MLflow run is left RUNNING forever. Extra ones (several such deaths) are ended KILLED."""
    from dataclasses import replace

    from mlflow.tracking import MlflowClient

    client = MlflowClient(session.tracking_uri)
    experiment = client.get_experiment_by_name(session.experiment)
    if experiment is None:
        return claimed
    found = client.search_runs([experiment.experiment_id], f"tags.config_hash = '{claimed.hash}'",
                               order_by=["attributes.start_time ASC"])
    if not found:
        return claimed
    for extra in found[1:]:
        if extra.info.status in ("RUNNING", "SCHEDULED"):
            _safe(lambda: client.set_terminated(extra.info.run_id, "KILLED"))
    return replace(claimed, mlflow_run_id=found[0].info.run_id)


def _failure_reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        text = f"out of memory: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno})"
    return text


def _safe(fn) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        logging.getLogger(__name__).warning("ignored on the way out: %s", exc)


class _Heartbeat:
    """Renews the lease every ``lease/4`` s from a thread, publishing the trial's progress."""

    def __init__(self, session: Session, run_hash: str, worker: str, lease_s: float):
        self.store, self.run_hash, self.worker, self.lease_s = session.store, run_hash, worker, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._values: dict = {}
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_hash}", daemon=True)

    def progress(self, *, epochs_done: int, step: int) -> None:
        self._values.update(epochs_done=epochs_done, step=step)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                values, self._values = self._values, {}
                if not self.store.heartbeat(self.run_hash, self.worker, self.lease_s, **values):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried next period
                continue

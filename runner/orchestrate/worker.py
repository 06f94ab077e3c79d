"""A worker: pull the next ready trial, train it, record it; repeat until the chain is done.

Workers never talk to each other, only to the result store. Each pass they (1) materialise the
studies whose base is now known, (2) claim one claimable run with an atomic UPDATE, (3) train it
with a heartbeat thread renewing the lease, (4) write its outcome. A worker that dies leaves a
run whose lease expires; the next worker that passes by claims it and resumes from the
checkpoint. SIGINT/SIGTERM make the current trial checkpoint, flush its logs and stop.

What a fault does to the one trial, and what it does to the run:

* A checkpoint that cannot be read (truncated, garbage, written by another version) is set
  aside as ``checkpoint.pt.corrupt-<n>`` and the trial trains again from scratch; the reason is
  stored with the run (``ablate status`` shows it). Restarting, not failing: the trial's config
  is not at fault, and its result from scratch is the one an uninterrupted run would have had.
* A full disk (ENOSPC, EDQUOT, SQLite's "database or disk is full") is not the trial's failure
  either: the run is handed back ``interrupted`` with the reason, its MLflow run ended KILLED and
  the worker stops with :class:`RunStopped`. Writing that down needs a little space, so every
  worker keeps ``<workspace>/.disk-reserve`` and deletes it at the moment the disk is full.
* A worker whose lease was taken over (it stalled past it) writes nothing more on any path: the
  result store's writes are conditional on the lease, and the ones that cannot be (MLflow,
  Optuna) are preceded by a check in the store (:meth:`ResultStore.holds`).
"""
from __future__ import annotations

import errno
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

log = logging.getLogger(__name__)

DISK_RESERVE = ".disk-reserve"
DISK_RESERVE_BYTES = 4 << 20  # a few hundred SQLite pages: the hand-back and MLflow's end, with room


class LeaseLost(RuntimeError):
    """Another worker took our run over (our lease expired): stop without writing anything."""


class TrialPruned(Exception):
    """Optuna's pruner stopped the trial on its intermediate grader."""


class RunStopped(Exception):
    """The whole run stops, not one trial: the disk is full. The running trial was handed back
    ``interrupted`` and resumes once there is space. Exit code 1 (not 2: nothing the user typed
    or pointed at is wrong, and 1 already means "the run did not complete, see why")."""

    exit_code = 1


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
    """Train until the chain is done or ``stop``. Raises :class:`RunStopped` on a full disk
    (already at the start: then nothing is claimed) and :class:`InputError` on bad input."""
    summary = WorkerSummary()
    scope = studies_in_scope(session, options.only)
    _warm_up(session)
    ensure_disk_reserve(session.workspace)
    try:
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
    except Exception as exc:  # a full disk between two trials (a claim, a study's cells) stops too
        if isinstance(exc, RunStopped) or not (words := disk_full(exc)):
            raise
        raise RunStopped(f"disk full ({words}); free space in {session.workspace} and run again") from exc
    summary.interrupted = summary.interrupted or bool(stop)
    return summary


def disk_full(exc: BaseException) -> Optional[str]:
    """The OS's (or the database's) words if ``exc`` is a full disk or an exhausted quota, else
    None. Torch's writer, SQLite, SQLAlchemy and MLflow each wrap it differently, so the chain is
    followed (``__cause__``, ``__context__``, a SQLAlchemy error's ``orig``); PostgreSQL and
    SQLite say so only in words."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        text = str(e)
        for words in ("database or disk is full", "No space left on device", "Disk quota exceeded"):
            if words in text:
                return words
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return None


def ensure_disk_reserve(workspace: Path) -> None:
    """Keep ``<workspace>/.disk-reserve`` (a few MiB), deleted by :func:`release_disk_reserve`
    when the disk is full so that handing the trial back can still be written. A disk already
    too full for it stops the run before anything is claimed."""
    path = Path(workspace) / DISK_RESERVE
    if path.exists():
        return
    from runner.atomic import write_bytes_atomic

    try:  # random bytes: a compressing file system would store zeros in no space at all
        write_bytes_atomic(path, os.urandom(DISK_RESERVE_BYTES))
    except OSError as exc:
        if disk_full(exc):
            raise RunStopped(f"disk full: cannot write {path} ({exc.strerror}); free space in "
                             f"{workspace} and run again") from None
        raise


def release_disk_reserve(workspace: Path) -> None:
    Path(workspace, DISK_RESERVE).unlink(missing_ok=True)


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
    trial that reads it; once the input is fixed, the next ``ablate run`` resumes the trial.
    Raises :class:`RunStopped` the same way on a full disk."""
    # The lease is renewed from the claim on: opening MLflow may take longer than the lease.
    heartbeat = _Heartbeat(session, claimed.hash, options.worker_id, options.lease_s)
    heartbeat.start()
    try:
        return _execute(session, claimed, options, stop, heartbeat)
    except BaseException as exc:
        # Anything that escapes (bad input, a full disk, MLflow unreachable, a second Ctrl-C)
        # hands the run back at once instead of leaving it "running" until its lease expires.
        full = disk_full(exc)
        if full:
            release_disk_reserve(session.workspace)  # the room to write the hand-back
            reason = f"stopped: disk full ({full}); resumes from its last checkpoint"
        elif isinstance(exc, InputError):
            reason = f"stopped on bad input: {exc}"
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (a second Ctrl-C): resumes from its last checkpoint"
        else:
            reason = f"worker stopped: {_failure_reason(exc)}"
        if _hand_back(session, claimed.hash, options.worker_id, reason):
            # The MLflow run too: a second Ctrl-C may land inside the graceful stop's own
            # tracker.finish() and cut it short; a no-op where the run was already ended.
            _safe(lambda: _end_mlflow_run(session, claimed.hash))
        if full:
            raise RunStopped(f"disk full while training {claimed.hash} ({full}): the trial "
                             f"was handed back and resumes from its last checkpoint once there is "
                             f"space in {session.workspace}") from exc
        raise
    finally:
        heartbeat.stop()


def _hand_back(session: Session, run_hash: str, worker: str, reason: str) -> bool:
    """Mark our run ``interrupted`` with ``reason``. True if it was ours (then its MLflow run is
    ours to end too), also when the write itself failed."""
    try:
        return session.store.finish_run(run_hash, worker, "interrupted", error=reason)
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        log.warning("could not hand run %s back: %s", run_hash, exc)
        try:
            return session.store.holds(run_hash, worker)
        except Exception:  # noqa: BLE001 - the store is gone: its lease will expire
            return False


def _set_aside(error) -> str:
    """Move an unreadable checkpoint out of the way (kept for inspection, never read again) and
    say so in one line: the trial trains again from scratch."""
    path = error.path
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, target)
    note = f"checkpoint {error.reason}; set aside as {target.name}, trained again from scratch"
    log.warning("%s: %s", path.parent.name, note)
    return note


def _execute(session: Session, claimed: ClaimedRun, options: WorkerOptions, stop: StopFlag,
             heartbeat: "_Heartbeat") -> str:
    from runner.tasks.mtl.assets import prepare_splits
    from runner.tasks.mtl.pretrain import resolve_encoder_weights
    from runner.tracking.trial_log import open_tracker
    from runner.tasks.mtl.train import CheckpointUnreadable, TrainHooks, TrialInterrupted, checkpoint_position, train

    store, worker = session.store, options.worker_id
    config = TrainConfig(**claimed.config)
    if options.device:
        config = config.model_copy(update={"device": options.device})
    run_dir = session.run_dir(claimed.hash)
    for leftover in run_dir.glob("checkpoint.pt.tmp*"):  # a checkpoint write that was killed
        leftover.unlink(missing_ok=True)
    cells = store.trials_of_run(claimed.hash)

    def restart_from_scratch(error: CheckpointUnreadable) -> None:
        store.update_own_run(claimed.hash, worker, error=_set_aside(error))

    try:
        epochs_done, step = checkpoint_position(run_dir) or (0, 0)
    except CheckpointUnreadable as error:
        restart_from_scratch(error)
        epochs_done, step = 0, 0
    store.truncate_history(claimed.hash, after_step=step, after_epoch=epochs_done)  # replayed rows

    def ours() -> bool:
        """Still our run? Asked before every write the store cannot make conditional."""
        return not heartbeat.lost.is_set() and store.holds(claimed.hash, worker)

    if claimed.resumed and claimed.mlflow_run_id is None:
        claimed = _adopt_mlflow_run(session, claimed)
    tracker = open_tracker(session, claimed, cells, config, may_write=ours)
    if not store.update_own_run(claimed.hash, worker, mlflow_run_id=tracker.run_id,
                                checkpoint_path=str(run_dir / "checkpoint.pt")):
        tracker.abandon()
        return "interrupted"
    optuna_link = None
    if cells and any(c["optuna_trial"] is not None and c["optuna_trial"] >= 0 for c in cells):
        from runner.orchestrate.search import OptunaLink

        optuna_link = OptunaLink.for_run(session, cells)

    step_rows: list[dict] = []

    def flush_steps() -> None:
        if not ours():
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
        flush_steps()  # checks the lease for the writes below
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
    model = resolved = val_split = None

    def run_trainer():
        nonlocal model, resolved, val_split
        if options.trainer is not None:
            return options.trainer(config, run_dir, hooks)
        train_split, val_split = prepare_splits(config, session.workspace)
        resolved = resolve_encoder_weights(config, session.workspace)
        from models import build_model, count_parameters

        import torch

        torch.manual_seed(config.seed)
        model = build_model(resolved.to_model_config())
        store.update_own_run(claimed.hash, worker, params=count_parameters(model))
        return train(resolved, run_dir, train_split, val_split, hooks=hooks, model=model)

    def lost() -> str:  # the run is another worker's now: write nothing, not even MLflow's end
        tracker.abandon()
        return "interrupted"

    # MLflow is told the outcome before the result store: a worker killed in between leaves the
    # run "running" in the store, so it is claimed again and its MLflow run reopened and ended;
    # the other order could leave a finished trial's MLflow run RUNNING forever. Every branch
    # first makes sure the run is still ours: a worker stopped past its lease (SIGSTOP, a long
    # swap) must not end, tag or tell anything about the run its new owner is training.
    try:
        try:
            result = run_trainer()
        except CheckpointUnreadable as error:  # read, but it does not fit this model: start over
            restart_from_scratch(error)
            result = run_trainer()  # a fresh model: the failed load may have filled half of it
    except TrialInterrupted:
        if not ours():
            return lost()
        _safe(flush_steps)
        _safe(lambda: tracker.finish("KILLED"))
        position = checkpoint_position(run_dir) or (0, 0)  # progress as of the checkpoint just written
        store.finish_run(claimed.hash, worker, "interrupted", error=f"interrupted ({stop.reason or 'lease'})",
                         epochs_done=position[0], step=position[1])
        return "interrupted"
    except LeaseLost:
        return lost()
    except TrialPruned as exc:
        if not ours():
            return lost()
        _safe(flush_steps)
        tracker.set_tags({"ablate.pruned": "true"})
        _safe(lambda: tracker.finish("FINISHED"))
        store.finish_run(claimed.hash, worker, "pruned", error=str(exc))
        if optuna_link:
            optuna_link.tell_pruned()
        return "pruned"
    except InputError as exc:  # bad input, not a bad trial: execute() hands the run back
        if not ours():
            tracker.abandon()
            raise
        _safe(flush_steps)
        tracker.set_tags({"ablate.error": f"stopped on bad input: {exc}"[:4000]})
        _safe(lambda: tracker.finish("KILLED"))
        raise
    except Exception as exc:  # noqa: BLE001 - every failure (NaN loss, OOM, a bug) is recorded
        if not ours():  # e.g. the new owner removed our half-written checkpoint: its failure, not ours
            return lost()
        if disk_full(exc):  # not the trial's fault: execute() hands it back and stops the run
            release_disk_reserve(session.workspace)
            _safe(lambda: tracker.finish("KILLED"))
            raise
        reason = _failure_reason(exc)
        _safe(flush_steps)
        tracker.set_tags({"ablate.error": reason[:4000]})
        _safe(lambda: tracker.finish("FAILED"))
        store.finish_run(claimed.hash, worker, "failed", error=reason)
        if optuna_link:
            optuna_link.tell_failed()
        return "failed"
    except BaseException:  # a second Ctrl-C: stop now, but close the MLflow run; execute() hands the run back
        _safe(lambda: tracker.finish("KILLED"))  # the tracker's fence refuses it if the run is not ours
        raise

    if not ours():
        lost()
        return "skipped"  # the worker that took the run over records it
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

"""One claimed run, trained through its task: ``prepare``, then ``fit(config, ctx)``, then the outcome.

The worker calls :func:`execute` with a run it holds. A heartbeat thread renews the lease from
the claim on (opening the tracker or importing torch may take longer than the lease). The task
talks to :class:`~runner.orchestrate.context.TrialContext`; the ctx's records go through a
:class:`TrialRecorder` to the result store, the tracker and Optuna's pruner.

A finished run records the code version and data fingerprint that trained it with its outcome
(:mod:`runner.orchestrate.provenance`; told when its training starts: the code the process
imported), and once the store says it is finished its directory keeps what the study file's
``checkpoints:`` policy says (:mod:`runner.orchestrate.retention`).

Order of writes: the tracker is told the outcome before the result store. A worker killed in
between leaves the run ``running`` in the store, so it is claimed again and its tracker run
reopened and ended; the other order could leave a finished trial's tracker run RUNNING forever.

A worker whose lease was taken over (it stalled past it) writes nothing more on any path: the
store's writes are conditional on the lease, and the ones that cannot be (tracker, Optuna, the
checkpoint file) are preceded by a check in the store (:meth:`ResultStore.holds`).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Optional

import yaml

from ablations import flat
from ablations.errors import InputError
from runner.orchestrate.context import (CheckpointError, LeaseLost, Position, StepRow, TrialContext,
                                        TrialPruned, checkpoint_path, finite_metrics, read_checkpoint)
from runner.orchestrate.faults import (RunStopped, disk_full, failure_reason, release_disk_reserve, safe,
                                       set_aside)
from runner.orchestrate.provenance import provenance_columns
from runner.orchestrate.retention import retain_finished
from runner.orchestrate.session import Session
from runner.store import ClaimedRun

log = logging.getLogger(__name__)


def _epoch_point(metrics: Mapping[str, float], epoch: int) -> dict[str, float]:
    """An epoch's point in the tracker run: its metrics and the epoch number. One shape for the
    live epoch and for the epochs a resumed run is given again, so that the run's own dedup
    (``logged``) recognises the points it already holds."""
    return {**metrics, "epoch": epoch}


class TrialRecorder:
    """Where a trial's records go (the ctx's :class:`~runner.orchestrate.context.Recorder`): the
    result store (durable, lease-checked), the tracker run (queued) and Optuna's pruner."""

    def __init__(self, session: Session, run_hash: str, worker: str, heartbeat: "Heartbeat", run: Any,
                 optuna_link: Any = None):
        self.store, self.run_hash, self.worker = session.store, run_hash, worker
        self.heartbeat, self.run, self.optuna_link = heartbeat, run, optuna_link

    def ours(self) -> bool:
        """Still our run? Asked before every write the store cannot make conditional."""
        return not self.heartbeat.lost.is_set() and self.store.holds(self.run_hash, self.worker)

    def check_lease(self) -> None:
        if not self.ours():
            raise LeaseLost(f"run {self.run_hash}: lease lost to another worker")

    def lease_lost(self) -> bool:
        return self.heartbeat.lost.is_set()

    def on_step(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log_metrics(dict(scalars), step=step)
        self.heartbeat.progress(step=step)

    def record_steps(self, rows: list[StepRow]) -> None:
        self.check_lease()
        self.store.record_steps(self.run_hash, rows)

    def record_epoch(self, epoch: int, step: int, wall_time_s: float, metrics: Mapping[str, float]) -> None:
        self.check_lease()
        self.store.record_epoch(self.run_hash, epoch, step, wall_time_s, metrics)
        self.run.log_metrics(_epoch_point(metrics, epoch), step=step)
        self.heartbeat.progress(epochs_done=epoch, step=step)
        link = self.optuna_link
        if link is not None and link.should_prune(metrics, epoch):
            raise TrialPruned(f"pruned by Optuna after epoch {epoch} ({link.metric} {metrics[link.metric]:.3f})")

    def log_artifact(self, path: str, artifact_path: Optional[str]) -> None:
        self.run.log_artifact(path, artifact_path)


def execute(session: Session, claimed: ClaimedRun, options: Any, stop: Any) -> str:
    """Train one claimed run to an outcome: done | failed | pruned | interrupted | skipped.

    Raises :class:`InputError` (bad data set, missing weights file: the task said so) after
    putting the run back as ``interrupted``: bad input stops the whole run with exit code 2
    instead of failing every trial that reads it; once the input is fixed, the next ``ablate
    run`` resumes the trial. Raises :class:`RunStopped` the same way on a full disk."""
    heartbeat = Heartbeat(session, claimed.hash, options.worker_id, options.lease_s)
    heartbeat.start()
    try:
        return _Trial(session, claimed, options, stop, heartbeat).run()
    except BaseException as exc:
        # Anything that escapes (bad input, a full disk, the tracker unreachable, a second
        # Ctrl-C) hands the run back at once instead of leaving it "running" until its lease ends.
        full = disk_full(exc)
        if full:
            release_disk_reserve(session.workspace)  # the room to write the hand-back
            reason = f"stopped: disk full ({full}); resumes from its last checkpoint"
        elif isinstance(exc, InputError):
            reason = f"stopped on bad input: {exc}"
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (a second Ctrl-C): resumes from its last checkpoint"
        else:
            reason = f"worker stopped: {failure_reason(exc)}"
        if _hand_back(session, claimed.hash, options.worker_id, reason):
            # The tracker run too: a second Ctrl-C may land inside the graceful stop's own
            # finish() and cut it short; a no-op where the run was already ended.
            safe(lambda: end_tracking_run(session, claimed.hash))
        if full:
            raise RunStopped(f"disk full while training {claimed.hash} ({full}): the trial was handed "
                             f"back and resumes from its last checkpoint once there is space in "
                             f"{session.workspace}") from exc
        raise
    finally:
        heartbeat.stop()


class _Trial:
    """The state of one attempt (a class so that each step of :meth:`run` reads top to bottom)."""

    def __init__(self, session: Session, claimed: ClaimedRun, options: Any, stop: Any, heartbeat: "Heartbeat"):
        self.session, self.claimed, self.stop, self.heartbeat = session, claimed, stop, heartbeat
        self.store, self.worker, self.task = session.store, options.worker_id, session.task
        self.options = options
        self.run_dir = session.run_dir(claimed.hash)
        self.tracked = None
        self.provenance: dict = {}  # code_version, data_fingerprint: told before training starts

    def run(self) -> str:
        store, task, claimed = self.store, self.task, self.claimed
        try:
            config = task.Config.model_validate(claimed.config)
        except Exception as exc:  # noqa: BLE001 - stored by a task whose Config changed since
            return self._failed(f"its stored config no longer validates against task '{task.name}': {exc}")
        self.provenance = provenance_columns(task, config)
        cells = store.cells_of_run(claimed.hash)
        resume = self._resume()
        position = resume.position if resume else Position()
        store.truncate_history(claimed.hash, after_step=position.step, after_epoch=position.epoch)
        if not self._open_tracking(config, cells):
            return "interrupted"
        if position.epoch:
            self._backfill_epochs()
        optuna_link = None
        if any(c.optuna_trial is not None and c.optuna_trial >= 0 for c in cells):
            from runner.orchestrate.search import OptunaLink

            optuna_link = OptunaLink.for_run(self.session, cells, claimed.config)
        recorder = TrialRecorder(self.session, claimed.hash, self.worker, self.heartbeat, self.tracked, optuna_link)
        self._count_parameters(config)
        device = trial_device(self.options.device or getattr(config, "device", None))
        seed = getattr(config, "seed", cells[0].seed if cells else 0)

        def attempt(resume):
            ctx = TrialContext(run_dir=self.run_dir, workspace=self.session.workspace, device=device, seed=seed,
                               recorder=recorder, stop_requested=lambda: bool(self.stop), resume=resume,
                               step_flush=self.options.step_flush, rehearsal=self.options.rehearsal)
            ready = task.prepare(config, ctx) if task.prepare is not None else config
            return ctx, task.fit(ready, ctx)

        ctx = None
        try:
            try:
                ctx, final = attempt(resume)
            except CheckpointError as error:  # read, but it does not fit the task's model: start over
                self._restart_from_scratch(str(error))
                ctx, final = attempt(None)
        except TrialPruned as exc:
            if not recorder.ours():
                return self._lost()
            self.tracked.set_tags({"ablate.pruned": "true"})
            safe(lambda: self.tracked.finish("FINISHED"))
            if store.finish_run(claimed.hash, self.worker, "pruned", error=str(exc), **self.provenance):
                retain_finished(self.run_dir, self.session.plan.policies.keep, task)
            if optuna_link:
                optuna_link.tell_pruned()
            return "pruned"
        except LeaseLost:
            return self._lost()
        except InputError as exc:  # bad input, not a bad trial: execute() hands the run back
            if not recorder.ours():
                self.tracked.abandon()
                raise
            self.tracked.set_tags({"ablate.error": f"stopped on bad input: {exc}"[:4000]})
            safe(lambda: self.tracked.finish("KILLED"))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure (NaN loss, OOM, a bug) is recorded
            if not recorder.ours():  # e.g. the new owner removed our half-written checkpoint
                return self._lost()
            if disk_full(exc):  # not the trial's fault: execute() hands it back and stops the run
                release_disk_reserve(self.session.workspace)
                safe(lambda: self.tracked.finish("KILLED"))
                raise
            return self._failed(failure_reason(exc), optuna_link)
        except BaseException:  # a second Ctrl-C: stop now, but close the tracker run; execute() hands it back
            safe(lambda: self.tracked.finish("KILLED"))  # the tracker's fence refuses it if the run is not ours
            raise
        return self._finish(ctx, final, recorder, optuna_link, device)

    # -- the steps ---------------------------------------------------------------------------
    def _resume(self):
        for leftover in self.run_dir.glob(".checkpoint.pt.*.tmp"):  # a checkpoint write that was killed
            leftover.unlink(missing_ok=True)
        try:
            return read_checkpoint(self.run_dir)
        except CheckpointError as error:
            self._restart_from_scratch(str(error))
            return None

    def _restart_from_scratch(self, reason: str) -> None:
        path = checkpoint_path(self.run_dir)
        note = set_aside(path, reason.replace(f"{path}: ", "")) if path.exists() else reason
        self.store.update_own_run(self.claimed.hash, self.worker, error=note)
        self.store.truncate_history(self.claimed.hash, after_step=0, after_epoch=0)

    def _backfill_epochs(self) -> None:
        """Give a reopened tracker run the epochs the store kept up to the checkpoint. A killed
        attempt loses what its tracker run had queued but not yet written (kill -9 leaves no
        time to flush; logging never waits for the tracker), and the resumed attempt starts
        after those epochs, so without this their points would be missing from the tracker for
        good. Points the run already holds are dropped by the run itself (``logged``), so each
        epoch shows once."""
        for row in self.store.epochs([self.claimed.hash]):
            self.tracked.log_metrics(_epoch_point(row.metrics, row.epoch), step=row.step)

    def _open_tracking(self, config: Any, cells: list) -> bool:
        """Open (or reopen) the run's tracker run; False when the run is no longer ours."""
        from runner.atomic import write_text_atomic

        claimed, tracker = self.claimed, self.session.tracker()
        run_id = claimed.tracking_run_id
        if claimed.resumed and run_id is None:
            run_id = _adopt(tracker, claimed.hash)
        first = cells[0] if cells else None
        study, variant, seed = (first.study, first.variant, first.seed) if first else ("-", "-", 0)
        tags = {"study": study, "variant": variant, "seed": str(seed), "config_hash": claimed.hash,
                "trial_id": str(first.cell_id if first else -1), "profile": self.session.profile,
                "task": self.task.name, "ablate.studies": ",".join(sorted({c.study for c in cells})) or study}
        params = flat(config)
        self.tracked = tracker.open_run(run_id=run_id, name=f"{study}/{variant}/seed{seed}", tags=tags,
                                        params=params, may_write=self._ours)
        config_file = self.run_dir / "config.yaml"
        write_text_atomic(config_file, yaml.safe_dump(params, sort_keys=True))
        self.tracked.log_artifact(str(config_file), None)
        if not self.store.update_own_run(claimed.hash, self.worker, tracking_run_id=self.tracked.run_id,
                                         checkpoint_path=str(checkpoint_path(self.run_dir))):
            self.tracked.abandon()
            return False
        return True

    def _ours(self) -> bool:
        return not self.heartbeat.lost.is_set() and self.store.holds(self.claimed.hash, self.worker)

    def _count_parameters(self, config: Any) -> None:
        if self.task.count_parameters is None:
            return
        try:
            count = int(self.task.count_parameters(config))
        except Exception as exc:  # noqa: BLE001 - a size for the report, not the trial's result
            log.warning("run %s: counting parameters failed: %s", self.claimed.hash, exc)
            return
        self.store.update_own_run(self.claimed.hash, self.worker, params=count)

    def _finish(self, ctx: TrialContext, final: Optional[Mapping], recorder: TrialRecorder, optuna_link,
                device: str) -> str:
        claimed, store = self.claimed, self.store
        if final is None:
            if not ctx.stopped:
                return self._failed("fit returned no metrics without being asked to stop", optuna_link)
            if not recorder.ours():
                return self._lost()
            safe(ctx.flush)
            safe(lambda: self.tracked.finish("KILLED"))
            saved = ctx.saved or Position()
            store.finish_run(claimed.hash, self.worker, "interrupted",
                             error=f"interrupted ({self.stop.reason or 'lease'})",
                             epochs_done=saved.epoch, step=saved.step)
            return "interrupted"
        try:
            metrics = finite_metrics(final, required=tuple(self.task.metrics))
        except ValueError as exc:
            return self._failed(str(exc), optuna_link)
        if not recorder.ours():
            self._lost()
            return "skipped"  # the worker that took the run over records it
        ctx.flush()
        safe(lambda: self.tracked.finish("FINISHED"))
        position = ctx.position
        if not store.finish_run(claimed.hash, self.worker, "done", metrics=metrics, wall_time_s=ctx.wall_time_s,
                                device=device, epochs_done=position.epoch, step=position.step,
                                **self.provenance):
            return "skipped"  # our lease expired: the worker that took the run over records it
        retain_finished(self.run_dir, self.session.plan.policies.keep, self.task)
        if optuna_link:
            optuna_link.tell_done(metrics)
        return "done"

    def _failed(self, reason: str, optuna_link=None) -> str:
        if self.tracked is not None:
            self.tracked.set_tags({"ablate.error": reason[:4000]})
            safe(lambda: self.tracked.finish("FAILED"))
        self.store.finish_run(self.claimed.hash, self.worker, "failed", error=reason)
        if optuna_link:
            optuna_link.tell_failed()
        return "failed"

    def _lost(self) -> str:
        """The run is another worker's now: write nothing, not even the tracker's end."""
        if self.tracked is not None:
            self.tracked.abandon()
        return "interrupted"


def trial_device(name: Optional[str]) -> str:
    """The device the trial trains on: the worker's slot (``cuda:1``), else the config's; ``auto``
    (or none) is a GPU when one is visible."""
    if name and name != "auto":
        return name
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _hand_back(session: Session, run_hash: str, worker: str, reason: str) -> bool:
    """Mark our run ``interrupted`` with ``reason``. True if it was ours (then its tracker run is
    ours to end too), also when the write itself failed."""
    try:
        return session.store.finish_run(run_hash, worker, "interrupted", error=reason)
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        log.warning("could not hand run %s back: %s", run_hash, exc)
        try:
            return session.store.holds(run_hash, worker)
        except Exception:  # noqa: BLE001 - the store is gone: its lease will expire
            return False


def end_tracking_run(session: Session, run_hash: str) -> None:
    """End the run's tracker run KILLED if it is still running (its id is in the store)."""
    run = session.store.run(run_hash)
    if run is not None and run.tracking_run_id:
        session.tracker().end_run(run.tracking_run_id, "KILLED")


def _adopt(tracker: Any, run_hash: str) -> Optional[str]:
    """An earlier attempt died after creating its tracker run but before storing the run's id:
    find that run by its ``config_hash`` tag and resume it, so the trial keeps one identity and
    no tracker run is left RUNNING forever. Extra ones (several such deaths) are ended KILLED."""
    found = tracker.find_runs("config_hash", run_hash)
    if not found:
        return None
    for run_id, _status in found[1:]:
        safe(lambda: tracker.end_run(run_id, "KILLED"))
    return found[0][0]


class Heartbeat:
    """Renews the lease every ``lease/4`` s from a thread, publishing the trial's progress."""

    def __init__(self, session: Session, run_hash: str, worker: str, lease_s: float):
        self.store, self.run_hash, self.worker, self.lease_s = session.store, run_hash, worker, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._values: dict = {}
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_hash}", daemon=True)

    def progress(self, *, epochs_done: Optional[int] = None, step: Optional[int] = None) -> None:
        if epochs_done is not None:
            self._values["epochs_done"] = epochs_done
        if step is not None:
            self._values["step"] = step

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

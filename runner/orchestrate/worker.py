"""A worker: pull the next ready trial, train it, record it; repeat until the chain is done.

Workers never talk to each other, only to the result store. Each pass they (1) materialise the
studies whose base is now known, (2) claim one claimable run with an atomic UPDATE (or a search
cell, sampled by Optuna), (3) train it through the task (:mod:`runner.orchestrate.trial`), (4)
write its outcome. A worker that dies leaves a run whose lease expires; the next worker that
passes by claims it and resumes from the checkpoint. SIGINT/SIGTERM make the current trial
checkpoint, flush its records and stop; a second SIGINT stops at once (the trial is handed back).
What faults do to a trial and to the run: :mod:`runner.orchestrate.faults`.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Optional

from runner.orchestrate.faults import RunStopped, disk_full, ensure_disk_reserve
from runner.orchestrate.session import Session
from runner.orchestrate.trial import execute
from runner.orchestrate.walk import StudyState, materialize, studies_in_scope
from runner.store import ClaimedRun


@dataclass
class WorkerOptions:
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    device: Optional[str] = None           # overrides the config's device (e.g. "cuda:1")
    lease_s: float = 120.0
    poll_s: float = 1.0
    only: Optional[list[str]] = None
    step_flush: int = 200                  # step rows buffered before a store write
    rehearsal: bool = False                # `ablate run --rehearse`: the trials' ctx.rehearsal


class StopFlag:
    """Set by a signal handler; read by the training loop every step (``ctx.should_stop``)."""

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


def _warm_up(session: Session) -> None:
    """Import torch and open the tracker *before* claiming a run.

    Both take seconds (tens of seconds with 8+ workers starting on 2 cores). The lease is renewed
    from the claim on, but a trial that starts with them starts late; done here, every worker is
    ready before it competes for a run (measured before the lease was renewed from the claim: 3
    of 100 trials trained twice with 8 workers and a 60 s lease)."""
    try:
        import torch  # noqa: F401 - what the built-in task, and most tasks, train with
    except ImportError:
        pass
    session.tracker().connect()


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

            claimed = claim_search_cell(session, state.study_id, state.spec, state.base, options.worker_id,
                                        options.lease_s)
            if claimed is not None:
                return claimed
    return None

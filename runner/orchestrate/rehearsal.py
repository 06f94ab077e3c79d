"""``ablate run STUDY_FILE --rehearse``: every distinct trial config of the profile, run for a couple
of steps through the path a real trial takes, before the chain spends its GPU hours.

What is rehearsed: every study's cells on its real or projected base (as ``ablate inspect`` shows
them; a search: one config standing for its trials), each distinct config once, shrunk by its
task's ``rehearsal_config`` (the mtl task: 2 training steps and 1 validation batch, stand-ins for a
missing data root or missing ImageNet weights, with a note naming the fix).

At which size: a step's time, memory and shapes depend on the config's cost signature alone (the
task's ``cost``: model, input, batch). The first config of each signature runs at its
``rehearsal_config`` size; every later config of that signature (another learning rate, loss
weight or seed) runs as the task's ``miniature_config`` (the mtl task: 64x64 crops), which checks
its own path in a fraction of the time, and is shown with the memory and step time of the config
that ran its size (and fails with it). The report's full profile: 26 distinct configs, 11 sizes.

How: the configs are written into a store of their own, in ``<workspace>/rehearsal/`` (its own
``ablate.db``, runs, stand-in data; tracked in the experiment ``<name>-<profile>-rehearsal``), so
nothing lands among the study's results and a later real run starts clean. Each is claimed and
trained by :func:`runner.orchestrate.trial.execute`, the worker's own call (data, model, optimizer,
tracker run, checkpoints, final metrics), twice: first with the stop flag already set, as after a
Ctrl-C (the task checkpoints at its first ``should_stop()`` and hands the trial back), then resumed
from that checkpoint to the end, under the same tracker run. Per trial it prints ok, ok with
warnings (a stand-in was used, or the task never checkpointed when asked to stop) or the error
with its reason, the peak memory and the seconds per step, which also go into the calibration cache
(:mod:`runner.orchestrate.estimate`). Each rehearsal starts from an empty rehearsal store (the
stand-in assets are kept); a trial's checkpoint and final weights are deleted once it is rehearsed.

Exit code: 0 when every trial ran (warnings included), 1 when one failed or a study's cells
cannot be built.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ablations import flat, identity_hash
from ablations.errors import InputError
from runner.orchestrate.context import checkpoint_path, read_checkpoint
from runner.orchestrate.estimate import record_calibration, work_of
from runner.orchestrate.faults import RunStopped, failure_reason
from runner.orchestrate.probe import REHEARSAL_DIR, PeakMemory, shrink, step_seconds
from runner.orchestrate.projection import project_chain
from runner.orchestrate.retention import WEIGHTS_NAME
from runner.orchestrate.session import Session
from runner.orchestrate.walk import studies_in_scope
from runner.orchestrate.worker import StopFlag, WorkerOptions
from runner.store import Cell

#: The reason a rehearsal's first attempt stops with.
FIRST_STOP = "rehearsal: checkpoint at the first step, then resume"


@dataclass
class Rehearsed:
    """One distinct rehearsal run and the trials (``study / variant / seed``) it stands for."""

    config: object
    run_hash: str
    cells: list[str]
    notes: list[str] = field(default_factory=list)
    real_configs: list = field(default_factory=list)  # the trials' own configs (calibration keys)
    sized_by: Optional["Rehearsed"] = None             # a miniature: the run of its size
    miniature: list[str] = field(default_factory=list)  # a miniature: what its task made smaller
    outcome: str = "error"                             # ok | warn | error
    reason: str = ""
    memory: str = ""
    step_s: Optional[float] = None
    seconds: float = 0.0


@dataclass
class RehearsalOutcome:
    trials: list[Rehearsed]
    broken: list[str]          # studies or trials not rehearsed: "study[ / variant / seed]: reason"
    cells: int
    seconds: float

    @property
    def exit_code(self) -> int:
        return 1 if self.broken or any(t.outcome == "error" for t in self.trials) else 0


def rehearsal_session(main: Session, tracking_uri: Optional[str]) -> Session:
    """The rehearsal's session for the study's ``main`` one: in ``<workspace>/rehearsal/``, with an
    empty store (a rehearsal starts over; the stand-in data and weights there are kept), the same
    tracking server if one is given, its own experiment."""
    root = main.workspace / REHEARSAL_DIR
    for leftover in ("ablate.db", "ablate.db-wal", "ablate.db-shm", "ablate.db-journal"):
        (root / leftover).unlink(missing_ok=True)
    shutil.rmtree(root / "runs", ignore_errors=True)
    session = Session.open(main.study_file, profile=main.plan.profile, workspace=root, tracking_uri=tracking_uri)
    return dataclasses.replace(session, rehearsal=True)


def rehearse(main: Session, session: Session, *, only: Optional[list[str]] = None, device: Optional[str] = None,
             say: Callable[[str], None] = print) -> RehearsalOutcome:
    """Rehearse the studies in scope (``--study``) of ``main`` in the rehearsal ``session``."""
    started = time.perf_counter()
    scope = studies_in_scope(main, only)
    chain = project_chain(main, scope)
    broken = [f"{s.name}: its cells cannot be built: {s.error}" if s.error else
              f"{s.name}: not rehearsed: it starts from {s.spec.start_from}, which cannot run"
              for s in chain if s.error or s.base is None]
    groups = _groups(main, session, chain, broken)
    from runner.orchestrate.scheduler import prepare_workspace

    prepare_workspace(session)
    cells = sum(len(s.trials) for s in chain)
    common = [n for n in groups[0].notes if all(n in g.notes for g in groups)] if groups else []
    say(f"rehearsal of {main.plan.name} (profile {main.profile}): {cells} trials, {len(groups)} distinct "
        f"rehearsal runs in {session.workspace}, tracked in experiment '{session.experiment}'")
    for note in common:
        say(f"  note: {note}")
    for line in broken:
        say(f"[error] {line}")
    options = WorkerOptions(worker_id=f"{socket.gethostname()}:{os.getpid()}/rehearsal", device=device,
                            rehearsal=True)
    for n, group in enumerate(groups, 1):
        _rehearse_one(session, group, options)
        notes = [x for x in group.notes if x not in common]  # a stand-in of this trial's own: a warning
        if notes and group.outcome == "ok":
            group.outcome = "warn"
        sized = group.sized_by or group
        size = f"{sized.memory}, {f'{sized.step_s:.2f}' if sized.step_s is not None else '?'} s/step"
        if group.sized_by is not None:
            first = f"{groups.index(group.sized_by) + 1}/{len(groups)}"
            if group.sized_by.outcome == "error" and group.outcome != "error":
                group.outcome, group.reason = "error", f"its size failed in {first}"
            size = f"{'; '.join(group.miniature)}; its size ran as {first} ({size})"
        head = f"[{group.outcome}] {n}/{len(groups)} {' = '.join(group.cells)}"
        say(f"{head}: {group.reason + '; ' if group.reason else ''}{size}, {group.seconds:.0f} s"
            + "".join(f"\n    note: {x}" for x in notes))
        _calibrate(main, group, options)
    outcome = RehearsalOutcome(groups, broken, cells, time.perf_counter() - started)
    counts = {k: sum(g.outcome == k for g in groups) for k in ("ok", "warn", "error")}
    say(f"rehearsal: {counts['ok']} ok, {counts['warn']} ok with warnings, {counts['error']} failed"
        + (f", {len(broken)} not rehearsed" if broken else "")
        + f" in {outcome.seconds / 60:.1f} min; nothing was recorded among {main.plan.name}'s results")
    return outcome


def _groups(main: Session, session: Session, chain, broken: list[str]) -> list[Rehearsed]:
    """Every distinct config of the chain, shrunk (a miniature when its size is rehearsed already),
    grouped by the rehearsal run it becomes, and written into the rehearsal's store (study rows and
    cells) so that a worker can claim it. A trial whose task hooks (``rehearsal_config``,
    ``miniature_config``, ``cost``) raise is added to ``broken`` with the reason, not rehearsed."""
    task, store = main.task, session.store
    groups: dict[str, Rehearsed] = {}
    sizes: dict[str, Rehearsed] = {}  # cost signature -> the run at the configured size
    for position, study in enumerate(chain):
        if study.base is None or study.error:
            continue
        spec = study.spec
        trials = study.trials[:1] if spec.kind == "search" else study.trials
        overrides = {v.name: v.overrides for v in spec.variants}
        cells = []
        for trial in trials:
            label = f"{spec.name} / {trial.variant if spec.kind != 'search' else 'search'} / seed {trial.seed}"
            try:
                config, notes = shrink(task, trial.config)
                run_hash = identity_hash(task, config, trial.seed)
                size = work_of(task, config).key if task.cost is not None else None
                sized_by, miniature = sizes.get(size), []
                if sized_by is not None and sized_by.run_hash != run_hash and task.miniature_config is not None:
                    config, mini_notes = shrink(task, trial.config, miniature=True)
                    run_hash = identity_hash(task, config, trial.seed)
                    miniature = [n for n in mini_notes if n not in notes]
                    notes = [n for n in mini_notes if n in notes]
                else:
                    sized_by = None
            except Exception as exc:  # noqa: BLE001 - a task's hook with a bug: said, the rest rehearsed
                broken.append(f"{label}: task '{task.name}' cannot shrink it for a rehearsal: {failure_reason(exc)}")
                continue
            group = groups.setdefault(run_hash, Rehearsed(config, run_hash, [], sized_by=sized_by,
                                                          miniature=miniature))
            if size is not None and sized_by is None:
                sizes.setdefault(size, group)
            group.cells.append(label)
            group.notes += [n for n in notes if n not in group.notes]
            group.real_configs.append(trial.config)
            cells.append(Cell(trial.variant, trial.seed, flat(config), run_hash, overrides.get(trial.variant),
                              task=task.name))
        study_id = store.ensure_study(plan=main.plan.name, profile=main.profile, name=spec.name, position=position,
                                      kind="variants", start_from=spec.start_from,
                                      pin=spec.pin.set if spec.pin else None,
                                      pin_reason=spec.pin.reason if spec.pin else None, base_config=study.base,
                                      source=str(Path(main.study_file).resolve()))
        store.add_trials(study_id, cells)
    return list(groups.values())


def _rehearse_one(session: Session, group: Rehearsed, options: WorkerOptions) -> None:
    """Train ``group``'s config twice through the worker's path (see the module docstring)."""
    from runner.orchestrate.trial import trial_device

    run_hash = group.run_hash
    memory = PeakMemory(trial_device(options.device or getattr(group.config, "device", None)))
    memory.reset()
    started = time.perf_counter()
    warnings = []
    try:
        first = _attempt(session, run_hash, options, stop=True)
        if first == "interrupted":
            if read_checkpoint(session.run_dir(run_hash)) is None:
                warnings.append("no checkpoint when asked to stop (ctx.should_stop): a stopped trial starts over")
            second = _attempt(session, run_hash, options, stop=False)
        else:
            second = first
            if first == "done":
                warnings.append("finished without asking ctx.should_stop(): Ctrl-C cannot checkpoint it")
        run = session.store.run(run_hash)
        if second == "done":
            group.outcome = "warn" if warnings else "ok"
            group.reason = "; ".join(warnings)
        else:
            group.reason = (run.error if run and run.error else second) if second != "interrupted" \
                else f"stopped again after its resume ({run.error if run else ''})"
        group.step_s = step_seconds((s.step, s.wall_time_s) for s in session.store.steps(run_hash))
    except RunStopped:
        raise
    except InputError as exc:  # the trial was handed back; a real run would stop here with exit 2
        group.reason = f"bad input: {exc}"
    except Exception as exc:  # noqa: BLE001 - the rehearsal reports it and goes on
        group.reason = failure_reason(exc)
    finally:
        group.seconds = time.perf_counter() - started
        group.memory = memory.describe()
        for kept in (checkpoint_path(session.run_dir(run_hash)), session.run_dir(run_hash) / WEIGHTS_NAME):
            kept.unlink(missing_ok=True)  # up to GBs each: not kept


def _attempt(session: Session, run_hash: str, options: WorkerOptions, stop: bool) -> str:
    from runner.orchestrate.trial import execute

    claimed = session.store.claim_run(run_hash, options.worker_id, options.lease_s)
    if claimed is None:
        run = session.store.run(run_hash)
        raise RuntimeError(f"cannot claim rehearsal run {run_hash} (status {run.status if run else 'missing'}): "
                           "is another rehearsal of this workspace running?")
    flag = StopFlag()
    if stop:
        flag.set(FIRST_STOP)
    return execute(session, claimed, options, flag)


def _calibrate(main: Session, group: Rehearsed, options: WorkerOptions) -> None:
    """Keep the measured step time as this host's calibration of the trials' work (when the
    task has ``cost``): the cost preview then has an estimate for each of them."""
    from runner.orchestrate.trial import trial_device

    step_s = (group.sized_by or group).step_s
    if step_s is None or group.outcome == "error" or main.task.cost is None:
        return
    rates = {work_of(main.task, config).key: step_s for config in group.real_configs}
    record_calibration(main.workspace, rates, trial_device(options.device or getattr(group.config, "device", None)))


def run_rehearsal(study_file: Path, *, profile: Optional[str], workspace: Optional[Path], db: Optional[str],
                  tracking_uri: Optional[str], only: Optional[list[str]], gpus: Optional[str]) -> int:
    """``ablate run --rehearse``: the exit code (0 every trial ran, 1 one did not). One trial at a
    time, in this process, on the first GPU of ``--gpus`` (default: the configs' device, a GPU
    when one is visible). The study's own store (``--db``) is only read: decided winners."""
    import sys

    from runner.orchestrate.scheduler import parse_gpus

    ids = parse_gpus(gpus)
    main = Session.open(study_file, profile=profile, workspace=workspace, db_url=db, read_only=True)
    studies_in_scope(main, only)  # an unknown --study: bad input before anything is written
    session = rehearsal_session(main, tracking_uri)
    try:
        outcome = rehearse(main, session, only=only, device=f"cuda:{ids[0]}" if ids else None)
    except RunStopped as exc:
        print(f"ablate: {exc}", file=sys.stderr)
        return 1
    return outcome.exit_code

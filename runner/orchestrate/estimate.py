"""What the chain will cost: seconds per trial, per study and in all, projected and worst case.

A trial's work is its task's to say (``cost(config) -> (signature, steps[, note])``): configs of one
signature (model, input size, batch) take the same seconds per training step. Seconds per step come
from, first, finished runs in the result store of that signature (their wall time over their steps:
validation, checkpoints and data loading included), else this host's calibration
(``<workspace>/cache/calibration.json``: timed training steps, from ``--calibrate`` or a
rehearsal; validation not included). A task without ``cost`` is estimated per trial from finished
runs of the same config (seed and execution keys aside); else a trial's time is unknown.

The chain's estimate (:func:`chain_cost`) counts each distinct training once, at the first study
that asks for it, and leaves out finished ones. Later studies depend on winners not known yet:
``projected`` takes the projected winners (:mod:`runner.orchestrate.projection`); the ``worst``
case assumes that the most expensive variant wins every study not decided yet and that none of
the trainings after it is shared with another study (an upper bound: a study's real base can only
make fewer of its cells coincide with earlier ones).

Nothing here writes, except :func:`record_calibration` (into an existing workspace only).
"""
from __future__ import annotations

import json
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablations import Task, flat
from ablations.results import TERMINAL
from runner.orchestrate.projection import ProjectedStudy, project_chain, report_or_first
from runner.orchestrate.session import Session

CALIBRATION_FILE = Path("cache") / "calibration.json"


@dataclass(frozen=True)
class Work:
    """What one trial costs in the task's terms: ``key`` names its rate (seconds per step when
    ``steps`` is given, else per trial); ``note`` is the task's word on an assumption."""

    key: str
    steps: Optional[int]
    note: Optional[str] = None


def work_of(task: Task, config: Any) -> Work:
    """The work of ``config`` (a Config instance) for ``task``."""
    if task.cost is not None:
        signature, steps, *rest = task.cost(config)
        key = json.dumps({"task": task.name, "signature": signature}, sort_keys=True, default=str)
        return Work(key, None if steps is None else int(steps), rest[0] if rest else None)
    values = {k: v for k, v in flat(config).items() if k != "seed" and k not in task.execution_keys}
    return Work(json.dumps({"task": task.name, "config": values}, sort_keys=True), None)


class Rates:
    """Seconds per step (per trial for a task without ``cost``) by work key, and where each came
    from: ``runs`` (finished runs in the store) before ``calibration`` (this host's)."""

    def __init__(self, task: Task, measured: dict[str, tuple[float, str]]):
        self.task, self.measured = task, measured
        self._works: dict[str, Work] = {}

    @classmethod
    def load(cls, session: Session, calibrated: Optional[dict[str, float]] = None) -> "Rates":
        """The rates known now; ``calibrated``: this process's calibration (kept nowhere when the
        workspace does not exist)."""
        task = session.task
        measured = {key: (seconds, "calibration")
                    for key, seconds in {**read_calibration(session.workspace), **(calibrated or {})}.items()}
        from_runs: dict[str, list[float]] = {}
        for run in session.store.done_runs(task.name):
            if not run.wall_time_s:
                continue
            try:
                work = work_of(task, task.Config.model_validate(run.config))
            except Exception:  # noqa: BLE001 - a config an older version of the task stored
                continue
            if work.steps is None and task.cost is None:
                from_runs.setdefault(work.key, []).append(run.wall_time_s)
            elif run.step:
                from_runs.setdefault(work.key, []).append(run.wall_time_s / run.step)
        measured.update({key: (statistics.median(values), "runs") for key, values in from_runs.items()})
        return cls(session.task, measured)

    def work(self, config: Any) -> Work:
        key = json.dumps(flat(config), sort_keys=True)
        if key not in self._works:
            self._works[key] = work_of(self.task, config)
        return self._works[key]

    def seconds(self, config: Any, done_steps: int = 0) -> Optional[float]:
        """Estimated seconds of ``config`` still to train after ``done_steps``; None: unknown."""
        work = self.work(config)
        rate = self.measured.get(work.key)
        if rate is None:
            return None
        if self.task.cost is None:
            return rate[0]
        if work.steps is None:
            return None
        return rate[0] * max(work.steps - done_steps, 0)

    def source(self, config: Any) -> Optional[str]:
        rate = self.measured.get(self.work(config).key)
        return rate[1] if rate else None


@dataclass
class StudyCost:
    name: str
    cells: int
    distinct: int                     # trainings first asked for by this study
    finished: int                     # of those, done, failed or pruned
    remaining: list = field(default_factory=list)  # seconds of each training still to run (None: unknown)
    sources: dict = field(default_factory=dict)    # where those estimates come from -> how many
    known: bool = True                # its base is the real one
    blocked: Optional[str] = None     # why it has no cells (its variants cannot be built, no base)

    @property
    def seconds(self) -> float:
        return sum(s for s in self.remaining if s is not None)

    @property
    def unknown(self) -> int:
        return sum(s is None for s in self.remaining)

    @property
    def per_trial(self) -> Optional[float]:
        known = [s for s in self.remaining if s is not None]
        return sum(known) / len(known) if known else None


@dataclass
class ChainCost:
    studies: list[StudyCost]
    worst: list[StudyCost]
    notes: list[str]
    sources: dict[str, int]           # where the remaining trainings' estimates come from
    rates: Optional[Rates] = None     # the rates it was estimated with

    def total(self, attr: str, worst: bool = False) -> Any:
        return sum(getattr(s, attr) for s in (self.worst if worst else self.studies))

    @property
    def cells(self) -> int:
        return self.total("cells")

    def trainings(self, worst: bool = False) -> int:
        return sum(len(s.remaining) for s in (self.worst if worst else self.studies))


def chain_cost(session: Session, scope=None, rates: Optional[Rates] = None, worst: bool = True) -> ChainCost:
    """The cost of the studies in ``scope`` (default all): projected and (``worst``) worst case. A
    running or interrupted training counts only the steps it has left."""
    rates = rates or Rates.load(session)
    projected = project_chain(session, scope)
    worst = project_chain(session, scope, choose=most_expensive(rates)) if worst else []
    hashes = {t.config_hash for s in projected + worst for t in s.trials if t.config_hash}
    runs = session.store.runs(sorted(hashes))
    status = {h: r.status for h, r in runs.items()}
    steps = {h: r.step for h, r in runs.items()}
    search = _search_finished(session, projected)
    studies = _costs(projected, rates, status, steps, search, share=lambda s: True)
    worst_costs = _costs(worst, rates, status, steps, search, share=lambda s: s.known)
    notes = list(dict.fromkeys(note for study in projected for t in study.trials
                               if (note := rates.work(t.config).note)))
    sources: dict[str, int] = {}
    for study in studies:
        for source, n in study.sources.items():
            sources[source] = sources.get(source, 0) + n
    return ChainCost(studies, worst_costs, notes, sources, rates)


def _costs(chain: list[ProjectedStudy], rates: Rates, status: dict, steps: dict, search: dict,
           share) -> list[StudyCost]:
    """Per study: its cells, its new distinct trainings, the finished ones and the seconds left.
    A training is shared with an earlier study only where ``share(study)`` (the worst case shares
    none in studies whose base is projected)."""
    seen: set[str] = set()
    out = []
    for study in chain:
        cost = StudyCost(study.name, len(study.trials), 0, 0, known=study.known,
                         blocked=study.error or (None if study.base is not None else study.origin))
        mine: set[str] = set()
        finished_search = search.get(study.name, 0)
        for k, trial in enumerate(study.trials):
            h = trial.config_hash
            if h is not None and (h in mine or (share(study) and h in seen)):
                continue
            if h is not None:
                mine.add(h)
            cost.distinct += 1
            done = status.get(h) in TERMINAL if h is not None else k < finished_search
            if done:
                cost.finished += 1
            else:
                cost.remaining.append(rates.seconds(trial.config, steps.get(h, 0) if h else 0))
                source = rates.source(trial.config) or "none"
                cost.sources[source] = cost.sources.get(source, 0) + 1
        seen |= mine
        out.append(cost)
    return out


def _search_finished(session: Session, chain: list[ProjectedStudy]) -> dict[str, int]:
    """Finished Optuna trials of each search study whose base is the real one."""
    from runner.orchestrate.walk import survey

    specs = [s.spec for s in chain if s.spec.kind == "search" and s.known]
    if not specs:
        return {}
    return {state.name: sum(c.status in TERMINAL for c in state.cells)
            for state in survey(session, specs) if state.ready}


def most_expensive(rates: Rates):
    """A ``choose`` for :func:`project_chain`: the variant whose trial costs the most wins (the
    first of equals; the projected winner when no trial of the study has an estimate)."""
    def choose(spec, base, trials):
        priced = [(s, -k, t) for k, t in enumerate(trials) if (s := rates.seconds(t.config)) is not None]
        if spec.kind == "search" or not priced:
            return report_or_first(spec, base, trials)
        chosen = max(priced, key=lambda p: p[:2])[2]
        return flat(chosen.config), f"most expensive variant: {chosen.variant}"
    return choose


def duration(seconds: Optional[float]) -> str:
    """``42 s``, ``12 min``, ``3.4 h``, ``2.1 d``; ``?`` for unknown."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def eta_line(session: Session, scope, slots: int) -> str:
    """``12/28 trainings finished, ETA 3.2 h`` (+ how many have no estimate) for a running chain."""
    cost = chain_cost(session, scope, worst=False)
    seconds, unknown = eta_seconds(cost.studies, slots)
    text = f"{cost.total('finished')}/{cost.total('distinct')} trainings finished"
    if cost.trainings():
        text += f", ETA {duration(seconds) if seconds or not unknown else '?'}"
        text += f" + {unknown} trainings without an estimate" if unknown and seconds else ""
    return text


def eta_seconds(studies: list[StudyCost], slots: int) -> tuple[float, int]:
    """(seconds, trainings without an estimate) until the chain is done with ``slots`` workers:
    studies run one after another (each waits for the winner before it), a study's trainings
    spread over the workers but take at least as long as the longest of them."""
    total, unknown = 0.0, 0
    for study in studies:
        known = [s for s in study.remaining if s is not None]
        unknown += len(study.remaining) - len(known)
        if known:
            total += max(sum(known) / max(slots, 1), max(known))
    return total, unknown


# -- the calibration cache ------------------------------------------------------------------------
def read_calibration(workspace: Path) -> dict[str, float]:
    """This host's measured seconds per step by work key (empty when there is no cache)."""
    try:
        data = json.loads((Path(workspace) / CALIBRATION_FILE).read_text())
        return {key: float(hosts[socket.gethostname()]["s_per_step"])
                for key, hosts in data.items() if socket.gethostname() in hosts}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def record_calibration(workspace: Path, rates: dict[str, float], device: str) -> bool:
    """Add this host's ``rates`` (work key -> seconds per step) to the workspace's cache; False when
    the workspace does not exist (a read command creates none). Several hosts share one cache (a
    workspace on a shared file system): each keeps its own entries."""
    workspace = Path(workspace)
    if not workspace.is_dir() or not rates:
        return False
    from runner.atomic import write_text_atomic
    from runner.locks import exclusive_lock

    path = workspace / CALIBRATION_FILE
    with exclusive_lock(workspace / ".calibration.lock"):
        try:
            data = json.loads(path.read_text())
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        for key, seconds in rates.items():
            hosts = data.setdefault(key, {})
            hosts[socket.gethostname()] = {"s_per_step": seconds, "device": device, "at": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, sort_keys=True, indent=1))
    return True

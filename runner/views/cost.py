"""The cost preview: what the chain will cost before any GPU hour is spent.

Printed by ``ablate inspect`` (after the trials) and as the first lines of ``ablate run``: per
study its cells, the distinct trainings it adds after dedup, how many of those are finished, the
estimated time per training and in all; then the chain's total and its worst case (see
:mod:`runner.orchestrate.estimate` for where the estimates come from and what the worst case
assumes). Plain lines (no terminal needed): they read the same in a batch job's log.
"""
from __future__ import annotations

from typing import Optional

from runner.orchestrate.estimate import ChainCost, Rates, StudyCost, chain_cost, duration  # noqa: F401
from runner.orchestrate.session import Session

SOURCES = {"runs": "from finished runs of the same model and input size",
           "calibration": "from calibration on this host", "none": "without an estimate"}


def _left(study: StudyCost) -> str:
    if not study.remaining:
        return "-"
    text = duration(study.seconds) if study.unknown < len(study.remaining) else "?"
    return text + (f" + {study.unknown} ?" if study.unknown and study.unknown < len(study.remaining) else "")


def cost_preview(session: Session, *, only: Optional[list[str]] = None, calibrate: bool = False) -> ChainCost:
    """The chain's cost (``only``: these studies and what they need); ``calibrate`` first times
    the trainings of the projected and the worst-case chain that no finished run estimates."""
    from runner.orchestrate.walk import studies_in_scope

    scope = studies_in_scope(session, only)
    calibrated: dict[str, float] = {}
    if calibrate:  # until the worst case, which follows the estimates, asks for nothing new
        from runner.orchestrate.estimate import most_expensive
        from runner.orchestrate.probe import calibrate as run_calibration
        from runner.orchestrate.projection import project_chain

        tried: set[str] = set()
        while True:
            rates = Rates.load(session, calibrated)
            trials = [(f"{s.name} / {t.variant}", t.config)
                      for chain in (project_chain(session, scope), project_chain(session, scope, most_expensive(rates)))
                      for s in chain for t in s.trials
                      if rates.source(t.config) != "runs" and rates.work(t.config).key not in tried]
            if not trials:
                break
            tried |= {rates.work(config).key for _, config in trials}
            calibrated.update(run_calibration(session, trials))
    return chain_cost(session, scope, Rates.load(session, calibrated))


def print_cost_preview(session: Session, *, only: Optional[list[str]] = None, calibrate: bool = False) -> None:
    profile = f" --profile {session.plan.profile}" if session.plan.profile else ""
    command = f"ablate inspect {session.study_file}{profile} --calibrate"
    for line in preview_lines(cost_preview(session, only=only, calibrate=calibrate), command=command):
        print(line, flush=True)


def preview_lines(cost: ChainCost, *, command: str = "ablate inspect STUDY_FILE --calibrate") -> list[str]:
    """The preview as lines of text (the caller prints them)."""
    width = max([len("total")] + [len(s.name) for s in cost.studies])
    head = f"  {'study':<{width}}  cells  distinct  finished  per training  to train  base"
    lines = [f"cost: {len(cost.studies)} studies, {cost.cells} trials, {cost.total('distinct')} distinct "
             f"trainings after dedup, {cost.total('finished')} finished", head]
    for s in cost.studies:
        base = "blocked: " + s.blocked if s.blocked else ("known" if s.known else "projected")
        lines.append(f"  {s.name:<{width}}  {s.cells:>5}  {s.distinct:>8}  {s.finished:>8}  "
                     f"{duration(s.per_trial) if s.remaining else '-':>12}  {_left(s):>8}  {base}")
    unknown = sum(s.unknown for s in cost.studies)
    total = sum(s.seconds for s in cost.studies)
    lines.append(f"  {'total':<{width}}  {cost.cells:>5}  {cost.total('distinct'):>8}  "
                 f"{cost.total('finished'):>8}  {'':>12}  {duration(total) if total or not unknown else '?':>8}"
                 + (f" + {unknown} trainings without an estimate" if unknown else ""))
    worst_unknown = sum(s.unknown for s in cost.worst)
    worst = sum(s.seconds for s in cost.worst)
    if any(not s.known for s in cost.studies):
        lines.append(f"  worst case: {cost.trainings(worst=True)} trainings to run, "
                     + (duration(worst) if worst or not worst_unknown else "?")
                     + (f" + {worst_unknown} without an estimate" if worst_unknown and worst else "")
                     + " (the most expensive variant wins every study not decided yet, and no "
                       "training after it is shared with another study)")
    if cost.sources:
        lines.append("  estimates of the trainings to run: "
                     + ", ".join(f"{n} {SOURCES.get(k, k)}" for k, n in sorted(cost.sources.items())))
    if unknown or worst_unknown:
        lines.append(f"  trainings without an estimate have no finished run of their model and input size "
                     f"and no calibration on this host: `{command}` times a few steps of each")
    lines.extend(f"  note: {note}" for note in cost.notes)
    return lines

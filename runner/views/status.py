"""``ablate status``: per study, trials per status, the winner on the study's objective (and what
decided it: the best mean, a tie-break, or the significance gate that kept the incumbent), the
seeds the decision took (adaptive seeds: why they stopped), the reasons of failed trials and of
studies that cannot run, why a trial is interrupted (Ctrl-C, a dead worker, a full disk) or was
restarted (an unreadable checkpoint), and which results were trained by other code or data than
today's (they stay results: a flag)."""
from __future__ import annotations

import json
from typing import Optional

from ablations.adaptive import seeds_text
from ablations.objective import decided_by, runner_up
from runner.orchestrate.provenance import CodeVersion, Stale, stale_results
from runner.orchestrate.session import Session
from runner.orchestrate.walk import StudyState, studies_in_scope, survey

_OUTCOMES = ("done", "running", "failed", "pruned", "interrupted", "pending", "unsampled")


def decision(state: StudyState) -> str:
    """What decided a finished study's winner: the gate (``advance: significant``), its
    objective, a tie-break metric, or file order."""
    if state.spec.advance.gated and state.decision is not None:
        return state.decision.short
    objective = state.spec.objective
    second = runner_up(state.results, state.winner, objective)
    if second is None:
        return "only complete variant"
    metric = decided_by(state.winner, second, objective)
    if metric is None:
        return f"file order (every mean tied with {second.variant})"
    return metric if metric == objective.metric else f"tie-break {metric} (tied on {objective.metric})"


def print_status(session: Session, states: Optional[list[StudyState]] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    states = states if states is not None else survey(session, studies_in_scope(session, None))
    by_name = {s.name: s for s in states}
    console = Console(width=160)
    from rich.markup import escape

    table = Table(title=escape(f"{session.plan.name} [{session.profile}] task {session.task.name} in {session.workspace}"),
                  title_justify="left")
    for col in ("study", *_OUTCOMES[:5], "pending", "winner", "objective (mean)", "decided by", "seeds"):
        # the winner cell is read as one phrase ("waiting for lr (blocked: lr has no winner)"):
        # on a narrow console the other columns wrap instead
        table.add_column(col, no_wrap=col in ("study", "winner"))
    failures, notes = [], []
    for state in states:
        statuses = [s for r in state.results for s in r.statuses]
        counts = {k: statuses.count(k) for k in _OUTCOMES}
        value, decided = "-", "-"
        seeds = seeds_text(state.spec.adaptive, state.decision, state.finished)
        if state.error is not None:
            winner = "blocked: cannot run (see below)"
        elif state.base is None:
            blocker = by_name.get(state.blocked_by)
            why = "cannot run" if blocker is not None and blocker.error else "has no winner"
            winner = f"waiting for {state.spec.start_from}" + (
                f" (blocked: {state.blocked_by} {why})" if state.blocked_by else "")
        elif state.winner is not None:
            metric = state.spec.objective.metric
            winner, value = state.winner.variant, f"{metric} {state.winner.mean(metric):.3f}"
            decided = decision(state)
        else:
            winner = "no winner (all failed)" if state.finished else "-"
        table.add_row(state.name, *(str(counts[k]) for k in _OUTCOMES[:5]),
                      str(counts["pending"] + counts["unsampled"]), winner, value, decided, seeds)
        failures += [f"{state.name} / {c.variant} / seed {c.seed}: {c.error or '?'}"
                     for c in state.cells if c.status == "failed"]
        notes += [f"{c.status} {state.name} / {c.variant} / seed {c.seed}: {c.error}"
                  for c in state.cells if c.status in ("interrupted", "running", "done") and c.error]
    console.print(table)
    for state in states:  # a pin overrides the inherited winner: say what and why
        if state.spec.pin is not None:
            console.print(f"pin {state.name}: {json.dumps(state.spec.pin.set, sort_keys=True)} over the "
                          f"winner of {state.spec.start_from or 'the profile base'}: "
                          f"{state.spec.pin.reason or '(no reason given)'}", highlight=False, markup=False)
    for state in states:  # the gate and adaptive seeds: why the chain goes on from this winner
        if state.finished and state.decision is not None and state.decision.best is not None \
                and (state.spec.advance.gated or state.spec.adaptive is not None):
            rule, seeds = state.spec.advance.describe(), state.spec.adaptive
            if seeds is not None:
                rule += f"; adaptive seeds {seeds.min}..{seeds.max}, {seeds.step} at a time"
            console.print(f"decision {state.name} ({rule}): {state.decision.reason}",
                          highlight=False, markup=False, soft_wrap=True)
    for line in failures:
        console.print(f"[red]failed[/red] {line}", highlight=False)
    for state in states:
        if state.error is not None:
            console.print(f"blocked {state.name}: {state.error}", highlight=False, markup=False, soft_wrap=True)
    for line in notes:
        console.print(line, highlight=False, markup=False)
    code = next((s.spec.code_version for s in states), None)
    if code is not None:  # identity: {code: strict}
        console.print(f"identity: strict: trials are identified with code {CodeVersion.decode(code).label(long=True)} "
                      "(results of other code stay in the store under their own identity)",
                      highlight=False, markup=False)
    stale = stale_lines(stale_results(session, states))
    for line in stale:
        console.print(f"[yellow]stale[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    if stale:
        console.print("(stale results stay results; 'identity: {code: strict}' in the study file trains them "
                      "again under a new identity)", highlight=False, markup=False)


_LISTED = 6  # trials named per line


def stale_lines(stale: list[Stale]) -> list[str]:
    """One line per distinct reason: "2 results trained at 1a2b3c4, now 9f8e7d6+dirty: <trials>"."""
    by_reason: dict[str, list[Stale]] = {}
    for item in stale:
        by_reason.setdefault(item.reason, []).append(item)
    lines = []
    for reason, items in by_reason.items():
        named = ", ".join(f"{s.study} / {s.variant} / seed {s.seed}" for s in items[:_LISTED])
        more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
        lines.append(f"{len(items)} result{'s' if len(items) > 1 else ''} {reason}: {named}{more}")
    return lines

"""The objective a study is decided on, and the winner rule.

Why a module: "which variant won" feeds the next study's base, Optuna's direction and pruning, the
statistics, ``ablate status`` and the report. Written once here, every one of them agrees. An
objective is one metric with a goal (``max``/``min``) and optional tie-break metrics; the task
declares its metrics' goals and a default objective, and a study file may override it at top
level, per profile and per study (``objective: {metric, goal, tie_break}``).

The winner of a study is the complete variant (every seed done) with the best mean objective over
its seeds; variants whose means are equal are told apart by the tie-break metrics' means in order,
then by their order in the study file (the first wins).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

from ablations.results import VariantResult

Goal = Literal["max", "min"]
GOALS: tuple[str, ...] = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """``metric`` to ``goal``, then each ``(metric, goal)`` of ``tie_break`` in order."""

    metric: str
    goal: Goal = "max"
    tie_break: tuple[tuple[str, Goal], ...] = ()

    @property
    def keys(self) -> tuple[tuple[str, Goal], ...]:
        return ((self.metric, self.goal), *self.tie_break)

    @property
    def direction(self) -> str:
        """Optuna's name for the goal."""
        return "maximize" if self.goal == "max" else "minimize"

    def oriented(self, value: float, goal: Optional[Goal] = None) -> float:
        """``value`` turned so that larger is better; NaN ranks below everything."""
        if value is None or math.isnan(value):
            return -math.inf
        return value if (goal or self.goal) == "max" else -value

    def rank_key(self, result: VariantResult) -> tuple[float, ...]:
        """Larger is better: the oriented mean of each key metric."""
        return tuple(self.oriented(result.mean(m), g) for m, g in self.keys)

    def better(self, value: float, than: float) -> bool:
        """Is ``value`` of the objective metric strictly better than ``than``?"""
        return self.oriented(value) > self.oriented(than)

    def describe(self) -> str:
        text = f"{self.metric} ({self.goal})"
        if self.tie_break:
            text += ", ties: " + ", ".join(f"{m} ({g})" for m, g in self.tie_break)
        return text


def make_objective(spec: object, goals: Mapping[str, str]) -> Objective:
    """An Objective from ``spec``: a metric name or a mapping ``{metric, goal?, tie_break?}``.

    ``goals`` are the task's declared metric goals; a goal left out is the declared one. Raises
    ValueError naming the problem (the caller locates it in the study file)."""
    if isinstance(spec, str):
        spec = {"metric": spec}
    if not isinstance(spec, Mapping) or "metric" not in spec:
        raise ValueError("objective must be a metric name or a mapping with 'metric'")
    metric = spec["metric"]
    if metric not in goals:
        raise ValueError(f"unknown metric '{metric}' (the task's metrics: {', '.join(goals)})")
    goal = spec.get("goal") or goals[metric]
    if goal not in GOALS:
        raise ValueError(f"goal must be 'max' or 'min' (got {goal!r})")
    ties = []
    for name in spec.get("tie_break") or ():
        if name not in goals:
            raise ValueError(f"unknown tie_break metric '{name}' (the task's metrics: {', '.join(goals)})")
        ties.append((name, goals[name]))
    return Objective(metric, goal, tuple(ties))


def pick_winner(results: Sequence[VariantResult], objective: Objective) -> Optional[VariantResult]:
    """The best complete variant (ties: tie-break metrics, then study-file order), else None."""
    best: Optional[VariantResult] = None
    for result in results:
        if result.complete and (best is None or objective.rank_key(result) > objective.rank_key(best)):
            best = result
    return best


def runner_up(results: Sequence[VariantResult], winner: Optional[VariantResult],
              objective: Objective) -> Optional[VariantResult]:
    """The best complete variant other than the winner, by the same rule."""
    if winner is None:
        return None
    return pick_winner([r for r in results if r is not winner], objective)


def decided_by(winner: Optional[VariantResult], second: Optional[VariantResult],
               objective: Objective) -> Optional[str]:
    """The metric whose means told the winner apart from the runner-up: the objective's metric, a
    tie-break metric, or None when every mean is equal (study-file order decided)."""
    if winner is None or second is None:
        return None
    for (metric, goal), a, b in zip(objective.keys, objective.rank_key(winner), objective.rank_key(second)):
        if a != b:
            return metric
    return None

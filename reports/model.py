"""What the report is rendered from: typed, immutable input built by the caller.

Why: the report is a pure function of this input (no store, no tracker, no file), so the caller
(``runner/views/report.py``) decides where the numbers come from and the report can be rendered
and tested from plain values. Cells are duck-typed (any object with the attributes of
:class:`Cell`, e.g. the store's ``CellRecord``), so this package imports nothing of the runner.

The winner rule is the chain's (:func:`ablations.advance.decide`): the best mean on the study's
own objective, or under ``advance: {when: significant}`` the incumbent unless the best mean beats
it significantly; "winner" once the study is finished, "leading" before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional, Protocol, Sequence

import pandas as pd

from ablations.advance import AdvanceRule, Decision, decide
from ablations.objective import Objective, decided_by, runner_up
from ablations.results import VariantResult

if TYPE_CHECKING:
    from ablations.plan import StudySpec

__all__ = ["Cell", "MetricInfo", "PinInfo", "ReportInput", "StudyReport", "report_number"]

Goal = Literal["max", "min"]


@dataclass(frozen=True)
class MetricInfo:
    """A declared metric of the task: its goal and the name its columns carry (``label``;
    empty: the metric's name)."""

    name: str
    goal: Goal = "max"
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def better(self) -> str:
        return "higher is better" if self.goal == "max" else "lower is better"


class Cell(Protocol):
    """One trial cell as the report reads it (the store's ``CellRecord`` has these attributes)."""

    variant: str
    seed: int
    status: Optional[str]          # None: a search cell not sampled yet
    run_hash: Optional[str]
    tracking_run_id: Optional[str]
    error: Optional[str]
    metrics: Mapping[str, float]   # final metrics, empty until done


class PinInfo(Protocol):
    """Keys set over the inherited winner (``ablations`` Pin: ``set``, ``reason``)."""

    set: Mapping[str, Any]
    reason: Optional[str]


def report_number(numbers: Any, key: str) -> Any:
    """One of the study file's report numbers for a variant (a metric name, ``params`` or
    ``time``), from a mapping or an object with attributes; None when absent."""
    if numbers is None:
        return None
    if isinstance(numbers, Mapping):
        return numbers.get(key)
    return getattr(numbers, key, None)


@dataclass(frozen=True, eq=False)   # equality by identity: a DataFrame has no truth value
class StudyReport:
    """One study of the plan with what the store holds for it.

    ``results``: ``ablations.results.summarise`` over the study's declared cells; ``finished``:
    ``ablations.results.study_finished(results)``; ``status_counts``: cells per status (a cell
    without status counts as ``unsampled``); ``curves``: one row per (run, epoch) with columns
    ``run_hash, variant, seed, epoch, step, wall_time_s`` and one column per metric;
    ``pin_from_store``: the pin recorded with the study, shown when the spec has none;
    ``incumbent``: the variant the significance gate keeps (the chain walk names it)."""

    spec: StudySpec
    objective: Objective
    results: Sequence[VariantResult]
    finished: bool
    status_counts: Mapping[str, int]
    cells: Sequence[Cell] = ()
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    pin_from_store: Optional[PinInfo] = None
    incumbent: Optional[str] = None

    @cached_property
    def decision(self) -> Decision:
        """The chain's decision on the results now (provisional until the study is finished)."""
        rule = getattr(self.spec, "advance", None) or AdvanceRule()
        return decide(self.results, self.objective, rule, self.incumbent)

    @property
    def best(self) -> Optional[VariantResult]:
        """The winner rule's choice now (provisional until the study is finished): the variant
        the chain continues from, the incumbent when the gate kept it."""
        return self.decision.chosen

    @property
    def kept_incumbent(self) -> bool:
        """The significance gate kept the incumbent over a better mean."""
        return self.decision.kept_incumbent

    @property
    def winner(self) -> Optional[VariantResult]:
        """The study's winner, as the chain decides it: only once every cell is terminal."""
        return self.best if self.finished else None

    @property
    def best_label(self) -> str:
        """"winner" for a finished study; "leading" while cells are still pending/running."""
        return "winner" if self.finished else "leading"

    @cached_property
    def runner_up(self) -> Optional[VariantResult]:
        return runner_up(self.results, self.best, self.objective)

    @property
    def decided_by(self) -> Optional[str]:
        """The metric that told the best variant from the runner-up; None: every mean tied."""
        return decided_by(self.best, self.runner_up, self.objective)

    @property
    def n_done(self) -> int:
        return self.status_counts.get("done", 0)

    @property
    def pin(self) -> Optional[PinInfo]:
        return self.spec.pin if self.spec.pin is not None else self.pin_from_store

    def result(self, variant: str) -> Optional[VariantResult]:
        for r in self.results:
            if r.variant == variant:
                return r
        return None

    def best_mean(self, metric: Optional[str] = None) -> Optional[float]:
        """The best variant's mean of ``metric`` (default: the objective's); None if unknown."""
        if self.best is None:
            return None
        value = self.best.mean(metric or self.objective.metric)
        return None if math.isnan(value) else value

    def report_numbers(self, variant: Optional[str]) -> Any:
        """The study file's report numbers for ``variant`` (read with :func:`report_number`)."""
        return (self.spec.report or {}).get(variant) if variant else None

    def variant_order(self) -> list[str]:
        """The study file's variants first (file order), then any others in cell order."""
        seen = [v.name for v in self.spec.variants]
        for r in self.results:
            if r.variant not in seen:
                seen.append(r.variant)
        return seen


@dataclass(frozen=True, eq=False)
class ReportInput:
    """A study file's plan for one profile, with every study's results.

    ``file``: the study file's display name (no directory: the output stays portable);
    ``metrics``: the task's declared metrics in declared order; ``objective``: the file's default
    objective (the chain's summary and figure compare studies on it); ``runs_total`` /
    ``runs_done`` / ``wall_time_total_s``: over the distinct runs the studies' cells point at (a
    run shared by studies counts once; wall time summed over attempts); ``extra_studies``: names
    in the store but not in the study file; ``stale``: results trained by other code or data than
    the caller's (objects with ``study, variant, seed, run_hash, reason``), flagged, not left out."""

    name: str
    profile: str
    file: Optional[str]
    task: str
    metrics: Sequence[MetricInfo]
    objective: Objective
    studies: Sequence[StudyReport]
    runs_total: int = 0
    runs_done: int = 0
    wall_time_total_s: float = 0.0
    extra_studies: Sequence[str] = ()
    stale: Sequence[Any] = ()

    def study(self, name: Optional[str]) -> Optional[StudyReport]:
        for s in self.studies:
            if s.spec.name == name:
                return s
        return None

    def metric(self, name: str) -> MetricInfo:
        """The declared metric ``name``; an undeclared one gets its own name as label and the
        file objective's goal when it is the objective metric, else ``max``."""
        for m in self.metrics:
            if m.name == name:
                return m
        return MetricInfo(name, self.objective.goal if name == self.objective.metric else "max")

    def ordered_metrics(self, objective: Objective) -> list[MetricInfo]:
        """``objective``'s metric first (with the objective's goal), then the other declared
        metrics in declared order."""
        first = replace(self.metric(objective.metric), goal=objective.goal)
        return [first] + [m for m in self.metrics if m.name != objective.metric]

"""The plan's types: a loaded study file (:class:`StudyPlan`), its studies (:class:`StudySpec`)
and their trials (:class:`TrialSpec`).

Why a module: the builder (:mod:`ablations.build`) makes them and :mod:`ablations.plan` resolves
trials from them; both import them from here (``ablations.plan`` re-exports them), so neither
imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ablations.advance import AdvanceRule
from ablations.lineage import Pin
from ablations.objective import Objective
from ablations.policies import Policies
from ablations.search import SearchSpec
from ablations.seeds import AdaptiveSeeds
from ablations.task import Task
from ablations.variants import Variant

StudyKind = Literal["grid", "variants", "search"]


@dataclass(frozen=True)
class Source:
    """Where an entry of the study file (a variant, a grid's values, a pin, a search space) is,
    kept so that an error found only once a winner is known still names the file, line and key."""

    line: Optional[int]
    key: str  # the entry, e.g. studies[3].variants[1]
    keys: dict = field(default_factory=dict)  # config key -> (line, key path) of the value set


@dataclass(frozen=True)
class StudySpec:
    """One resolved study (profile trims applied). ``task`` is the plan's; ``objective`` decides
    its winner (the study's own, else the profile's, the file's or the task's default).
    ``report`` maps a variant to the report's numbers for it (metric name, ``params``, ``time``
    -> value). ``file`` and the sources locate its entries for ``resolve_config``; a spec built
    by hand may leave them empty."""

    name: str
    title: str
    section: str
    description: str
    start_from: Optional[str]  # an earlier study's name, or None: start from the profile base
    pin: Optional[Pin]
    seeds: list[int]
    kind: StudyKind
    variants: list[Variant]  # grid/variants studies; empty for a search
    search: Optional[SearchSpec]  # search studies only
    task: Task
    objective: Objective
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    file: str = ""
    at: Optional[Source] = None  # the study entry
    pin_at: Optional[Source] = None
    variant_at: dict[str, Source] = field(default_factory=dict)  # variant name -> its entry
    search_at: Optional[Source] = None  # the search space (every Optuna trial's values)
    # under ``identity: {code: strict}``: the code version the runner trains with, part of every
    # trial's identity (set by the runner, which knows the code; None: not part of it)
    code_version: Optional[str] = None
    # when the chain advances (ablations.advance), the incumbent named by ``baseline:``, and
    # adaptive seeds (ablations.adaptive: ``seeds`` are then the first ``min`` seeds)
    advance: AdvanceRule = field(default_factory=AdvanceRule)
    baseline: Optional[str] = None
    adaptive: Optional[AdaptiveSeeds] = None


@dataclass(frozen=True)
class StudyPlan:
    """A loaded study file for one profile. ``studies`` are in file order and each study's
    ``start_from`` study comes before it. ``objective`` is the profile's (else the file's, else
    the task's default); a study may override it (``StudySpec.objective``)."""

    file: str
    name: str
    profile: Optional[str]  # None when the file defines no profiles
    workspace: Optional[str]
    studies: list[StudySpec]
    task: Task
    objective: Objective
    base: dict = field(default_factory=dict)  # defaults + profile overrides (see profile_base)
    policies: Policies = Policies()  # checkpoints: and identity: (ablations.policies)

    def study(self, name: str) -> StudySpec:
        for study in self.studies:
            if study.name == name:
                return study
        raise KeyError(name)


@dataclass(frozen=True)
class TrialSpec:
    """One training run: a study's variant at one seed, with its resolved config (an instance of
    the task's Config) and its identity (:func:`ablations.plan.identity_hash`)."""

    study: str
    variant: str
    seed: int
    config: Any
    config_hash: str

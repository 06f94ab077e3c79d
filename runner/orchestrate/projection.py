"""The chain as it will probably run, before its winners are known.

``ablate inspect``, the cost preview, the run's ETA and the rehearsal all need every study's cells
before the studies they start from have run. A study's base is the profile's, or the real winner
of the study it starts from once that is decided, else a projected winner: by default the variant
the report itself chose (the best report number on the study's objective), else the study's first
variant; a search study's base stands in for its winner. The time estimates' worst case projects
another winner (the most expensive variant): ``choose``.

Read-only: the chain is surveyed (:func:`runner.orchestrate.walk.survey`), nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ablations import StudySpec, TrialSpec, expand_study, flat, profile_base, resolve_config, search_variant
from ablations.errors import InputError
from runner.orchestrate.session import Session
from runner.orchestrate.walk import search_cell_names, studies_in_scope, survey

#: ``choose(spec, base, trials) -> (winner's flat config, how it was chosen)``
Chooser = Callable[[StudySpec, dict, list[TrialSpec]], tuple[dict, str]]


@dataclass
class ProjectedStudy:
    """One study of the projected chain. ``trials``: every cell of a grid/variants study; for a
    search, one per Optuna trial, each with the search's representative config
    (:func:`search_point`) and no hash (their configs are sampled later)."""

    spec: StudySpec
    base: Optional[dict]           # None: the study it starts from cannot run
    origin: str                    # where the base comes from, in words
    known: bool                    # the base is the real one (the profile's or a decided winner)
    trials: list[TrialSpec] = field(default_factory=list)
    error: Optional[str] = None    # why its cells cannot be built on this base

    @property
    def name(self) -> str:
        return self.spec.name


def project_chain(session: Session, scope: Optional[list[StudySpec]] = None,
                  choose: Optional[Chooser] = None) -> list[ProjectedStudy]:
    """Every study in ``scope`` (default: all) on its real or projected base, in file order."""
    choose = choose or report_or_first
    out: list[ProjectedStudy] = []
    winners: dict[str, tuple[dict, str, bool]] = {}  # study -> (winner's config, how, real)
    for state in survey(session, scope if scope is not None else studies_in_scope(session, None)):
        spec = state.spec
        if spec.start_from is None:
            base, origin, known = profile_base(session.plan), "profile defaults", True
        elif spec.start_from in winners:
            parent, how, known = winners[spec.start_from]
            base, origin = parent, f"{how} of {spec.start_from}"
        else:
            out.append(ProjectedStudy(spec, None, f"none ({spec.start_from} cannot run)", False))
            continue
        study = ProjectedStudy(spec, base, origin, known)
        out.append(study)
        try:
            study.trials = study_trials(spec, base)
        except InputError as exc:
            study.error = str(exc)  # its variants cannot be built on this base: no winner either
            continue
        if state.winner is not None:
            winners[spec.name] = (state.winner.config, f"winner {state.winner.variant}", True)
        else:
            config, how = choose(spec, base, study.trials)
            winners[spec.name] = (config, how, False)
    return out


def projected_bases(session: Session) -> dict[str, tuple[dict, str]]:
    """Base config of every study that has one, and where it comes from (``ablate inspect``)."""
    return {s.name: (s.base, s.origin) for s in project_chain(session) if s.base is not None}


def study_trials(spec: StudySpec, base: dict) -> list[TrialSpec]:
    """The cells of ``spec`` on ``base`` (a search: its representative config per Optuna trial).
    Raises :class:`InputError` when a variant cannot be built on this base."""
    if spec.kind != "search":
        return expand_study(spec, base)
    config = search_point(spec, base)
    return [TrialSpec(spec.name, name, spec.seeds[0], config, None) for name in search_cell_names(spec)]


def search_point(spec: StudySpec, base: dict) -> Any:
    """One config of a search, standing for the ones Optuna will sample: every axis at its low end
    (a categorical axis: its first choice). Same model and input size as the sampled ones unless
    the search varies them."""
    params = {name: (p.choices[0] if p.type == "categorical" else
                     int(p.low) if p.type == "int" else float(p.low))
              for name, p in spec.search.space.items()}
    return resolve_config(base, spec, search_variant(params, 0), spec.seeds[0])


def report_or_first(spec: StudySpec, base: dict, trials: list[TrialSpec]) -> tuple[dict, str]:
    """The projected winner: the report's best variant on the study's objective, else the first."""
    if spec.kind == "search":
        return base, "base (search not run)"
    metric, objective = spec.objective.metric, spec.objective
    graded = [v for v in spec.variants if isinstance((spec.report.get(v.name) or {}).get(metric), (int, float))]
    chosen, how = spec.variants[0], "first variant (not run)"
    if graded:
        chosen = max(graded, key=lambda v: objective.oriented(float(spec.report[v.name][metric])))
        how = "report's winner (not run)"
    config = next(t.config for t in trials if t.variant == chosen.name)
    return flat(config), f"{how}: {chosen.name}"

"""Walk the study chain against the result store: which studies can start, and from what base.

A study can be materialised (its trial cells written to the store) once the study it starts from
has a winner; its base is then fixed in the store, so restarts and other workers agree on it.
Any worker may call :func:`materialize` at any time: every write is idempotent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from ablations import StudySpec, expand_study, profile_base
from runner.orchestrate.results import VariantResult, pick_winner, study_finished, summarise
from runner.orchestrate.session import Session


@dataclass
class StudyState:
    spec: StudySpec
    study_id: Optional[int]            # None: waiting for the study it starts from
    base: Optional[dict]
    results: list[VariantResult]
    winner: Optional[VariantResult]
    finished: bool                     # every cell is done, failed or pruned
    blocked_by: Optional[str] = None   # an earlier study that finished without a winner
    rows: list[dict] = field(default_factory=list)  # store rows of the cells the file declares now

    @property
    def name(self) -> str:
        return self.spec.name


def studies_in_scope(session: Session, only: Optional[list[str]]) -> list[StudySpec]:
    """The studies named by ``--study`` plus every study they start from, in file order."""
    specs = session.plan.studies
    if not only:
        return list(specs)
    by_name = {s.name: s for s in specs}
    from ablations.errors import InputError

    wanted: set[str] = set()
    for name in only:
        if name not in by_name:
            raise InputError(f"--study {name}: no such study in {session.study_file} "
                             f"(studies: {', '.join(by_name)})")
        while name is not None and name not in wanted:
            wanted.add(name)
            name = by_name[name].start_from
    return [s for s in specs if s.name in wanted]


def materialize(session: Session, scope: list[StudySpec]) -> list[StudyState]:
    """Write the cells of every study whose base is known; report each study's state.

    The base is derived again on every call (the profile's base, or the winner of the study a
    study starts from), never frozen: after an edit of the study file, cells whose config changed
    point at the new config's run, and cells the file no longer declares are left out of status,
    winners and reports (their runs stay in the store and are reused if the config comes back).
    A search study sampled on an older base starts over in a new Optuna study.
    """
    plan, store = session.plan, session.store
    states: dict[str, StudyState] = {}
    for position, spec in enumerate(plan.studies):
        if spec not in scope:
            continue
        parent = states.get(spec.start_from) if spec.start_from else None
        if spec.start_from and (parent is None or parent.winner is None):
            blocked = None
            if parent is not None:  # a parent that finished without a winner blocks us
                blocked = parent.blocked_by or (parent.name if parent.finished else None)
            states[spec.name] = StudyState(spec, None, None, [], None, False, blocked)
            continue
        base = parent.winner.config if parent else profile_base(plan)
        study_id = store.ensure_study(
            plan=plan.name, profile=session.profile, name=spec.name, position=position, kind=spec.kind,
            start_from=spec.start_from, pin=spec.pin.set if spec.pin else None,
            pin_reason=spec.pin.reason if spec.pin else None, base_config=base)
        rows = current_rows(store, study_id, _ensure_cells(session, spec, study_id, base))
        results = summarise(rows)
        finished = study_finished(results)
        winner = pick_winner(results) if finished else None
        states[spec.name] = StudyState(spec, study_id, base, results, winner, finished, rows=rows)
    return [states[s.name] for s in scope]


def declared_cells(spec: StudySpec, base: dict) -> set[tuple[str, int]]:
    """(variant, seed) of every cell the study file declares for ``spec`` on ``base``."""
    if spec.kind == "search":
        return {(name, spec.seeds[0]) for name in _search_cell_names(spec)}
    return {(t.variant, t.seed) for t in expand_study(spec, base)}


def current_rows(store, study_id: int, cells: set[tuple[str, int]]) -> list[dict]:
    """The study's store rows restricted to ``cells``: rows of cells an edit removed stay in the
    store (their runs are reused if the config comes back) but count nowhere."""
    return [r for r in store.study_trials(study_id) if (r["variant"], r["seed"]) in cells]


def _search_cell_names(spec: StudySpec) -> list[str]:
    return [f"search-{k:03d}" for k in range(spec.search.n_trials)]


# (store url, study id, base, study spec) -> cells this process already wrote: polling workers
# skip rewrites. The spec is part of the key: a study file re-read after an edit declares others.
_ENSURED: dict[tuple[str, int, str, str], set[tuple[str, int]]] = {}


def _ensure_cells(session: Session, spec: StudySpec, study_id: int, base: dict) -> set[tuple[str, int]]:
    """Write the study's current cells; return their (variant, seed) keys."""
    store = session.store
    key = (store.url, study_id, json.dumps(base, sort_keys=True), repr(spec))
    if key in _ENSURED:
        return _ENSURED[key]
    cells: set[tuple[str, int]] = set()
    if spec.kind == "search":  # cells are sampled by Optuna when a worker claims them
        from runner.orchestrate.search import optuna_study_name, rebase_search_cells

        for name in _search_cell_names(spec):
            store.add_trial(study_id, name, spec.seeds[0], config=None, config_hash=None)
            cells.add((name, spec.seeds[0]))
        rebase_search_cells(session, study_id, optuna_study_name(session, spec.name, base))
    else:
        overrides = {v.name: v.overrides for v in spec.variants}
        for trial in expand_study(spec, base):
            store.add_trial(study_id, trial.variant, trial.seed, config=trial.config.flat(),
                            config_hash=trial.config_hash, overrides=overrides[trial.variant])
            cells.add((trial.variant, trial.seed))
    _ENSURED[key] = cells
    return cells

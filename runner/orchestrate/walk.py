"""Walk the study chain against the result store: which studies can start, and from what base.

A study's base is the profile's base, or the winner of the study it starts from; it is derived
again on every walk, never frozen. Two walks share that rule:

* :func:`materialize` (``ablate run`` and its workers) writes the cells of every study whose base
  is known, in one transaction per study when something changed. On every pass it compares each
  stored cell with the config hash its own study file declares for it and points a cell that
  differs back at the declared run (an edit, a moved base, or another writer), so a run never
  takes a result for a config its file did not declare. Any worker may call it at any time:
  every write is idempotent.
* :func:`survey` (``status``, ``results``, ``inspect``, ``report``) writes nothing: each cell the
  file declares is joined with the stored run of *its declared config* (pending when there is none).

A study whose cells cannot be built on its base (an invalid combination that only shows once the
winner it starts from is known) is neither written nor trained: its state carries the one-line
reason, the studies that start from it are blocked, and the rest of the chain goes on.

Once every cell of a study is terminal, its decision (:func:`ablations.advance.decide`) names its
winner, the variant the next study starts from: the best mean on the study's objective, or under
``advance: {when: significant}`` the incumbent unless the best mean beats it significantly. The
incumbent is the study's ``baseline:`` or the variant whose config is the inherited one (its
cells point at the runs the base was measured on). With adaptive seeds
(:mod:`ablations.adaptive`) a finished study whose decision is not significant yet declares more
cells; both walks derive them from the stored results, round by round, so they agree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from ablations import StudySpec, expand_study, flat, identity_hash, profile_base, resolve_config
from ablations.adaptive import more_seeds
from ablations.advance import Decision, decide
from ablations.errors import InputError
from ablations.results import VariantResult, study_finished, summarise
from ablations.variants import Variant
from runner.orchestrate.session import Session
from runner.store import Cell, CellRecord, RunRecord, SourceConflict


@dataclass
class StudyState:
    spec: StudySpec
    study_id: Optional[int]            # the stored study row (None: not written yet)
    base: Optional[dict]               # None: waiting for the study it starts from
    results: list[VariantResult]
    winner: Optional[VariantResult]    # the decision's choice, once finished: the next study's base
    finished: bool                     # every cell is done, failed or pruned
    # the study that stops this one: an earlier study that finished without a winner, or one
    # (this one included) whose cells cannot be built (``error`` of that study says why)
    blocked_by: Optional[str] = None
    cells: list[CellRecord] = field(default_factory=list)  # cells the file declares now, with their runs
    error: Optional[str] = None        # why this study's cells cannot be built on its base
    decision: Optional[Decision] = None  # provisional until finished (ablations.advance)
    incumbent: Optional[str] = None    # the variant the gate keeps (baseline: or the inherited config)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Its cells are known: the base is, and they could be built on it."""
        return self.base is not None and self.error is None


def studies_in_scope(session: Session, only: Optional[list[str]]) -> list[StudySpec]:
    """The studies named by ``--study`` plus every study they start from, in file order."""
    specs = session.plan.studies
    if not only:
        return list(specs)
    by_name = {s.name: s for s in specs}
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

    After an edit of the study file, cells whose config changed point at the new config's run,
    and cells the file no longer declares are left out of status, winners and reports (their runs
    stay in the store and are reused if the config comes back). A search study sampled on an
    older base starts over in a new Optuna study."""
    return _walk(session, scope, write=True)


def survey(session: Session, scope: list[StudySpec]) -> list[StudyState]:
    """The states :func:`materialize` would report, read without writing anything."""
    return _walk(session, scope, write=False)


def _walk(session: Session, scope: list[StudySpec], *, write: bool) -> list[StudyState]:
    plan = session.plan
    states: dict[str, StudyState] = {}
    for position, spec in enumerate(plan.studies):
        if spec not in scope:
            continue
        parent = states.get(spec.start_from) if spec.start_from else None
        if spec.start_from and (parent is None or parent.winner is None):
            blocked = None
            if parent is not None:  # a parent that finished without a winner, or cannot run, blocks us
                blocked = parent.blocked_by or (parent.name if parent.finished else None)
            states[spec.name] = StudyState(spec, None, None, [], None, False, blocked)
            continue
        base = parent.winner.config if parent else profile_base(plan)
        try:
            declared, incumbent = declared_cells(spec, base), incumbent_of(spec, base)
        except InputError as exc:
            states[spec.name] = StudyState(spec, None, base, [], None, False, blocked_by=spec.name,
                                           error=str(exc))
            continue
        study_id = _ensure_study(session, spec, position, base) if write else None
        while True:  # one round, or one per batch of adaptive seeds
            if write:
                cells = _write_cells(session, spec, study_id, base, declared)
            else:
                study_id, cells = _read_cells(session, spec, base, declared)
            results = summarise(cells)
            finished = study_finished(results)
            decision = decide(results, spec.objective, spec.advance, incumbent)
            more = more_seeds(spec.adaptive, decision) if spec.adaptive and finished else {}
            if not more:
                break
            order = {v.name: i for i, v in enumerate(spec.variants)}  # variant-major, as declared
            declared = sorted(declared + [c for name, seeds in more.items()
                                          for c in declared_cells(_seeds_of(spec, name, seeds), base)],
                              key=lambda c: (order[c.variant], c.seed))
        states[spec.name] = StudyState(spec, study_id, base, results, decision.chosen if finished else None,
                                       finished, cells=cells, decision=decision, incumbent=incumbent)
    return [states[s.name] for s in scope]


# (study spec, base) -> its cells: expanding validates every config (10,000 of them for a big
# grid), and polling workers walk the chain every second. Pure: the key is all it depends on.
_DECLARED: dict[tuple[str, str], list[Cell]] = {}


def declared_cells(spec: StudySpec, base: dict) -> list[Cell]:
    """Every cell the study file declares for ``spec`` on ``base``, in file order (search cells
    unsampled). Raises :class:`InputError` if a variant is invalid on this base."""
    key = (repr(spec), json.dumps(base, sort_keys=True))
    if key not in _DECLARED:
        if spec.kind == "search":
            cells = [Cell(name, spec.seeds[0], task=spec.task.name) for name in search_cell_names(spec)]
        else:
            overrides = {v.name: v.overrides for v in spec.variants}
            cells = [Cell(t.variant, t.seed, flat(t.config), t.config_hash, overrides[t.variant],
                          task=spec.task.name) for t in expand_study(spec, base)]
        _DECLARED[key] = cells
    return _DECLARED[key]


def _seeds_of(spec: StudySpec, variant: str, seeds: list[int]) -> StudySpec:
    """``spec`` narrowed to one variant at ``seeds`` (adaptive seeds: the cells one round adds)."""
    return replace(spec, variants=[v for v in spec.variants if v.name == variant], seeds=seeds)


def incumbent_of(spec: StudySpec, base: dict) -> Optional[str]:
    """The variant the gate of ``advance: significant`` keeps: the study's ``baseline:``, else
    the first variant whose config (at the study's first seed) is the inherited one, the base
    with the study's pin (None: no variant is, or the study is not gated; a search has none)."""
    if spec.baseline is not None or spec.kind == "search" or not spec.advance.gated:
        return spec.baseline
    seed = spec.seeds[0]
    try:
        inherited = identity_hash(spec.task, resolve_config(base, spec, Variant("inherited", {}), seed), seed)
    except InputError:  # the pinned base alone is no valid config: no variant can equal it
        return None
    return next((c.variant for c in declared_cells(spec, base)
                 if c.seed == seed and c.config_hash == inherited), None)


def search_cell_names(spec: StudySpec) -> list[str]:
    return [f"search-{k:03d}" for k in range(spec.search.n_trials)]


def _in_file_order(stored: list[CellRecord], cells: list[Cell]) -> list[CellRecord]:
    """The stored records of ``cells``, in their order; cells an edit removed stay in the store
    (their runs are reused if the config comes back) but count nowhere."""
    by_cell = {(r.variant, r.seed): r for r in stored}
    return [by_cell[(c.variant, c.seed)] for c in cells if (c.variant, c.seed) in by_cell]


def _write_cells(session: Session, spec: StudySpec, study_id: int, base: dict,
                 cells: list[Cell]) -> list[CellRecord]:
    store = session.store
    rows = _in_file_order(store.study_cells(study_id), cells)
    # a missing cell, or one pointing at another config than the file declares for it
    if len(rows) != len(cells) or any(c.config_hash is not None and r.run_hash != c.config_hash
                                      for r, c in zip(rows, cells)):
        store.add_trials(study_id, cells)
        rows = _in_file_order(store.study_cells(study_id), cells)
    if spec.kind == "search":  # cells sampled on an older base start over
        from runner.orchestrate.search import optuna_study_name, rebase_search_cells

        current = optuna_study_name(session, spec.name, base)
        if any(r.optuna_study not in (None, current) for r in rows):
            rebase_search_cells(session, study_id, current)
            rows = _in_file_order(store.study_cells(study_id), cells)
    return rows


def _ensure_study(session: Session, spec: StudySpec, position: int, base: dict) -> int:
    """The study's row, written with this study file as its source. A row written from another
    file is taken over only if that file is gone, or no longer declares a study file of this name
    with other contents; else two files with one ``name:`` would overwrite each other's cells
    (bad input naming both)."""
    plan, store = session.plan, session.store
    ours = Path(session.study_file).resolve()
    row = dict(plan=plan.name, profile=session.profile, name=spec.name, position=position, kind=spec.kind,
               start_from=spec.start_from, pin=spec.pin.set if spec.pin else None,
               pin_reason=spec.pin.reason if spec.pin else None, base_config=base, source=str(ours))
    try:
        return store.ensure_study(**row)
    except SourceConflict as conflict:
        other = Path(conflict.other)
        if _declares_other_trials(other, plan.name, ours):
            raise InputError(
                f"{ours}: name '{plan.name}' is already used in workspace {session.workspace} by {other}, "
                "a different study file: the two would overwrite each other's trials; give one of them "
                "another 'name:' or its own --workspace") from None
        return store.ensure_study(**row, take_over=True)


def _declares_other_trials(other: Path, name: str, ours: Path) -> bool:
    """Is ``other`` a study file, still there, named ``name``, with contents other than ours?"""
    import yaml

    try:
        if other.resolve() == ours or other.read_bytes() == ours.read_bytes():
            return False
        data = yaml.safe_load(other.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # gone (moved, deleted) or no longer a study file
    return isinstance(data, dict) and data.get("name") == name


def _read_cells(session: Session, spec: StudySpec, base: dict,
                cells: list[Cell]) -> tuple[Optional[int], list[CellRecord]]:
    store = session.store
    found = store.find_study(session.plan.name, session.profile, spec.name)
    study_id = found.id if found else None
    stored = {(r.variant, r.seed): r for r in store.study_cells(study_id)} if study_id else {}
    if spec.kind == "search":
        from runner.orchestrate.search import optuna_study_name

        current = optuna_study_name(session, spec.name, base)
        out = []
        for cell in cells:
            row = stored.get((cell.variant, cell.seed))
            if row is None or row.optuna_study not in (None, current):  # not sampled on this base
                row = _declared_record(cell, study_id, None)
            out.append(row)
        return study_id, out
    runs = store.runs([c.config_hash for c in cells])
    return study_id, [_declared_record(c, study_id, runs.get(c.config_hash)) for c in cells]


def _declared_record(cell: Cell, study_id: Optional[int], run: Optional[RunRecord]) -> CellRecord:
    """The record of a declared cell joined with the run of its declared config (``run`` None:
    not trained yet, pending; a search cell: unsampled). ``id`` -1: read, not stored."""
    status = run.status if run else ("pending" if cell.config_hash is not None else None)
    return CellRecord(
        id=-1, study_id=study_id if study_id is not None else -1, variant=cell.variant, seed=cell.seed,
        run_hash=cell.config_hash, overrides=cell.overrides, optuna_study=None, optuna_trial=None,
        status=status, error=run.error if run else None, config=run.config if run else cell.config,
        metrics=dict(run.metrics) if run else {}, params=run.params if run else None,
        wall_time_s=run.wall_time_s if run else None, tracking_run_id=run.tracking_run_id if run else None,
        epochs_done=run.epochs_done if run else 0, worker=run.worker if run else None)

"""Studies and their trial cells: written from the study file, read joined with their runs, and the
claims of search cells (sampled by Optuna one worker at a time)."""
from __future__ import annotations

import time
from typing import Optional, Sequence

from sqlalchemy import bindparam, insert, select, update

from runner.store._rows import chunks, dumps, final_metrics, loads
from runner.store._tables import runs, studies, trials
from runner.store.records import Cell, CellRecord, PlanCell, RunCell, StudyRecord


class SourceConflict(Exception):
    """The study row was written from another study file (``other``) than the one now writing it."""

    def __init__(self, other: str):
        super().__init__(other)
        self.other = other


class _ClaimLost(Exception):
    """Raised inside a transaction to roll it back: the claim it was written under is gone."""


_CELLS = (select(trials, runs.c.status, runs.c.error, runs.c.config_json, runs.c.params, runs.c.wall_time_s,
                 runs.c.tracking_run_id, runs.c.epochs_done, runs.c.worker)
          .select_from(trials.outerjoin(runs, trials.c.run_hash == runs.c.hash)))


def _cell_records(conn, query) -> list[CellRecord]:
    rows = conn.execute(query).all()
    metrics = final_metrics(conn, [r.run_hash for r in rows])
    return [CellRecord(id=r.id, study_id=r.study_id, variant=r.variant, seed=r.seed, run_hash=r.run_hash,
                       overrides=loads(r.overrides_json), optuna_study=r.optuna_study,
                       optuna_trial=r.optuna_trial, status=r.status, error=r.error, config=loads(r.config_json),
                       metrics=metrics.get(r.run_hash, {}), params=r.params, wall_time_s=r.wall_time_s,
                       tracking_run_id=r.tracking_run_id, epochs_done=r.epochs_done or 0, worker=r.worker,
                       claimed_by=r.claimed_by) for r in rows]


def _ensure_run(conn, run_hash: str, config: dict, task: str) -> None:
    if not conn.execute(select(runs.c.hash).where(runs.c.hash == run_hash)).first():
        conn.execute(insert(runs).values(hash=run_hash, task=task, config_json=dumps(config), status="pending",
                                         attempts=0, created_at=time.time(), epochs_done=0, step=0))


class CellsMixin:
    """Studies and cells of :class:`runner.store.ResultStore`."""

    def ensure_study(self, *, plan: str, profile: str, name: str, position: int, kind: str,
                     start_from: Optional[str], pin: Optional[dict], pin_reason: Optional[str],
                     base_config: dict, source: Optional[str] = None, take_over: bool = False) -> int:
        """Create the study row, or bring it up to date with the study file; return its id.

        ``source`` is the study file writing it. A row another file wrote raises
        :class:`SourceConflict` (nothing written) unless ``take_over``: the caller decides whether
        that file is gone or still declares the study (two files with one ``name:`` in one
        workspace would overwrite each other's cells). Two writers creating the row at once: the
        loser's INSERT violates the unique key and its transaction runs again (it then updates)."""
        values = dict(position=position, kind=kind, start_from=start_from,
                      pin_json=dumps(pin) if pin else None, pin_reason=pin_reason, base_json=dumps(base_config))
        if source is not None:
            values["source"] = source

        def fn(conn):
            row = conn.execute(select(studies).where(
                studies.c.plan == plan, studies.c.profile == profile, studies.c.name == name)).first()
            if row is None:
                return conn.execute(insert(studies).values(
                    plan=plan, profile=profile, name=name, created_at=time.time(), **values)
                ).inserted_primary_key[0]
            if source is not None and row.source not in (None, source) and not take_over:
                raise SourceConflict(row.source)
            if any(getattr(row, k) != v for k, v in values.items()):
                conn.execute(update(studies).where(studies.c.id == row.id).values(**values))
            return row.id
        return self._write(fn, idempotent_insert=True)

    def find_study(self, plan: str, profile: str, name: str) -> Optional[StudyRecord]:
        def fn(conn):
            row = conn.execute(select(studies).where(
                studies.c.plan == plan, studies.c.profile == profile, studies.c.name == name)).first()
            if row is None:
                return None
            return StudyRecord(id=row.id, plan=row.plan, profile=row.profile, name=row.name,
                               position=row.position, kind=row.kind, start_from=row.start_from,
                               pin=loads(row.pin_json), pin_reason=row.pin_reason,
                               base_config=loads(row.base_json), source=row.source)
        return self._read(fn)

    def study_names(self, plan: str, profile: str) -> list[str]:
        """Names of the studies stored for ``plan`` and ``profile``, in file position order (the
        report names those its study file no longer declares)."""
        return self._read(lambda conn: [name for (name,) in conn.execute(
            select(studies.c.name).where(studies.c.plan == plan, studies.c.profile == profile)
            .order_by(studies.c.position, studies.c.id))])

    def add_trial(self, study_id: int, variant: str, seed: int, *, config: Optional[dict],
                  config_hash: Optional[str], overrides: Optional[dict] = None, task: Optional[str] = None) -> bool:
        """:meth:`add_trials` for one cell. Returns False if the cell already existed."""
        return self.add_trials(study_id, [Cell(variant, seed, config, config_hash, overrides, task)]) == 1

    def add_trials(self, study_id: int, cells: Sequence[Cell]) -> int:
        """Write a study's cells (and the runs they point at, if new, with the cell's ``task``) in
        one transaction; return how many cells were new.

        An existing grid/variants cell whose config changed (the study file was edited, the base
        moved, or another writer pointed it elsewhere) is pointed at the new config's run; the old
        run stays, keyed by its hash. One SELECT of the study's cells and of the known runs, then
        bulk INSERTs and one UPDATE per changed cell: a 10,000-cell grid was 10,000 transactions.
        Two workers writing the same cells at once: the loser's INSERT violates a unique key and
        the whole transaction runs again (it then sees the winner's rows)."""
        wanted = {(c.variant, c.seed): c for c in cells}
        untasked = [f"{c.variant}/{c.seed}" for c in wanted.values() if c.config_hash is not None and not c.task]
        if untasked:
            raise ValueError(f"cells with a config need the task that trains it: {', '.join(untasked[:5])}")
        new_runs = {c.config_hash: c for c in wanted.values() if c.config_hash is not None}

        def fn(conn):
            now = time.time()
            stored = {(r.variant, r.seed): r for r in conn.execute(
                select(trials.c.id, trials.c.variant, trials.c.seed, trials.c.run_hash)
                .where(trials.c.study_id == study_id))}
            known: set[str] = set()
            for part in chunks(new_runs):
                known.update(h for (h,) in conn.execute(select(runs.c.hash).where(runs.c.hash.in_(part))))
            missing_runs = [dict(hash=h, task=c.task, config_json=dumps(c.config), status="pending", attempts=0,
                                 created_at=now, epochs_done=0, step=0)
                            for h, c in sorted(new_runs.items()) if h not in known]
            if missing_runs:
                conn.execute(insert(runs), missing_runs)
            new_cells, moved = [], []
            for key, cell in wanted.items():
                overrides_json = dumps(cell.overrides) if cell.overrides is not None else None
                row = stored.get(key)
                if row is None:
                    new_cells.append(dict(study_id=study_id, variant=cell.variant, seed=cell.seed,
                                          run_hash=cell.config_hash, overrides_json=overrides_json, created_at=now))
                elif cell.config_hash is not None and row.run_hash != cell.config_hash:
                    moved.append(dict(cell_id=row.id, new_hash=cell.config_hash, new_overrides=overrides_json))
            if new_cells:
                conn.execute(insert(trials), new_cells)
            if moved:
                conn.execute(update(trials).where(trials.c.id == bindparam("cell_id")).values(
                    run_hash=bindparam("new_hash"), overrides_json=bindparam("new_overrides")), moved)
            return len(new_cells)
        return self._write(fn, idempotent_insert=True)

    def study_cells(self, study_id: int) -> list[CellRecord]:
        """The study's cells joined with their runs (and final metrics), in cell order."""
        return self._read(lambda conn: _cell_records(
            conn, _CELLS.where(trials.c.study_id == study_id).order_by(trials.c.id)))

    def cells_of_run(self, run_hash: str) -> list[RunCell]:
        """Every cell that points at ``run_hash`` (one run may serve several studies)."""
        def fn(conn):
            rows = conn.execute(
                select(trials, studies.c.name.label("study"), studies.c.plan, studies.c.profile)
                .select_from(trials.join(studies, trials.c.study_id == studies.c.id))
                .where(trials.c.run_hash == run_hash).order_by(trials.c.id)).all()
            return [RunCell(cell_id=r.id, study=r.study, plan=r.plan, profile=r.profile, variant=r.variant,
                            seed=r.seed, optuna_study=r.optuna_study, optuna_trial=r.optuna_trial) for r in rows]
        return self._read(fn)

    def plan_cells(self, plan: str, profile: str, study_names: Sequence[str]) -> list[PlanCell]:
        """Every cell of these studies with its run's progress, in study-file order, in one read
        (the progress display polls it)."""
        def fn(conn):
            rows = conn.execute(
                select(studies.c.name, trials.c.variant, trials.c.seed, trials.c.run_hash, runs.c.status,
                       runs.c.epochs_done, runs.c.step, runs.c.wall_time_s, runs.c.error)
                .select_from(trials.join(studies, trials.c.study_id == studies.c.id)
                             .outerjoin(runs, trials.c.run_hash == runs.c.hash))
                .where(studies.c.plan == plan, studies.c.profile == profile, studies.c.name.in_(list(study_names)))
                .order_by(studies.c.position, trials.c.id)).all()
            return [PlanCell(study=r.name, variant=r.variant, seed=r.seed, run_hash=r.run_hash, status=r.status,
                             epochs_done=r.epochs_done, step=r.step, wall_time_s=r.wall_time_s, error=r.error)
                    for r in rows]
        return self._read(fn)

    # -- search cells ---------------------------------------------------------------------------
    def claim_search_cell(self, study_id: int, worker: str, lease_s: float = 120.0) -> Optional[CellRecord]:
        """Atomically take one search cell to sample: unsampled (run_hash NULL, optuna_trial
        NULL), or claimed by a worker whose claim expired before it bound the cell (it died
        between the claim and the bind; a claim without expiry was made by an older ablate).

        The claim (optuna_trial -1) holds for ``lease_s``: sampling takes milliseconds, so a claim
        that outlives it belongs to a dead or stalled worker, and the stalled one's bind is
        refused (:meth:`bind_search_cell`). The UPDATE repeats the condition, so of two workers
        that selected the same cell only one changes it; the other selects again. The cell is
        returned as it was before the claim: ``claimed_by`` set means it was taken from a worker
        whose claim expired."""
        def fn(conn):
            now = time.time()  # read under the write lock, as in claim_run
            free = (trials.c.study_id == study_id, trials.c.run_hash.is_(None),
                    trials.c.optuna_trial.is_(None)
                    | ((trials.c.optuna_trial == -1)
                       & (trials.c.claim_expires.is_(None) | (trials.c.claim_expires < now))))
            while True:
                found = _cell_records(conn, _CELLS.where(*free).order_by(trials.c.id).limit(1))
                if not found:
                    return None
                taken = conn.execute(update(trials).where(trials.c.id == found[0].id, *free).values(
                    optuna_trial=-1, claimed_by=worker, claim_expires=now + lease_s)).rowcount
                if taken == 1:
                    return found[0]
        return self._write(fn)

    def bind_search_cell(self, cell_id: int, optuna_study: str, optuna_trial: int, config: dict,
                         config_hash: str, overrides: dict, *, task: str, worker: Optional[str] = None) -> bool:
        """Point the cell at the run Optuna's trial asked for (created pending with ``task`` if
        new). With ``worker``, only while the cell is still that worker's claim: False (nothing
        written, the run row rolled back with it) when its claim expired and another worker took
        the cell."""
        mine = (trials.c.claimed_by == worker, trials.c.run_hash.is_(None)) if worker is not None else ()

        def fn(conn):
            _ensure_run(conn, config_hash, config, task)
            bound = conn.execute(update(trials).where(trials.c.id == cell_id, *mine).values(
                run_hash=config_hash, optuna_study=optuna_study, optuna_trial=optuna_trial,
                overrides_json=dumps(overrides), claimed_by=None, claim_expires=None))
            if bound.rowcount != 1:
                raise _ClaimLost
        try:
            self._write(fn, idempotent_insert=True)
        except _ClaimLost:
            return False
        return True

    def unbind_search_cells(self, study_id: int, *, keep_optuna_study: str) -> list[CellRecord]:
        """Put back, unsampled, every sampled cell of the study bound in another Optuna study
        than ``keep_optuna_study`` (its base moved: the search starts over on the new base).
        Returns the cells as they were; their runs stay in the store, keyed by hash. One
        transaction; each UPDATE is conditional, so a cell another worker already put back (or
        bound anew) is left alone."""
        stale = (trials.c.study_id == study_id, trials.c.optuna_study.is_not(None),
                 trials.c.optuna_study != keep_optuna_study)

        def fn(conn):
            cells = _cell_records(conn, _CELLS.where(*stale).order_by(trials.c.id))
            for cell in cells:
                conn.execute(update(trials).where(trials.c.id == cell.id,
                                                  trials.c.optuna_study == cell.optuna_study).values(
                    run_hash=None, optuna_study=None, optuna_trial=None, overrides_json=None))
            return cells
        return self._write(fn)

    def release_search_cell(self, cell_id: int, worker: Optional[str] = None) -> None:
        """Put a claimed cell back unsampled (its sampling failed): one conditional UPDATE; with
        ``worker``, only if the claim is still that worker's (else nothing changes)."""
        mine = (trials.c.claimed_by == worker,) if worker is not None else ()
        self._write(lambda conn: conn.execute(update(trials).where(
            trials.c.id == cell_id, trials.c.run_hash.is_(None), *mine).values(
            optuna_trial=None, claimed_by=None, claim_expires=None)))

"""The result database: the system of record for studies, trials, runs and their metrics.

SQLAlchemy Core over SQLite (WAL, in the workspace) by default, or any SQLAlchemy URL (PostgreSQL
for many machines). Three ideas keep work from being lost or repeated:

* A **run** is one training of one resolved config; its primary key is the config's identity hash
  (seed included). A **trial** is a (study, variant, seed) cell that points at a run. Two studies
  that ask for the same config share one run: it is trained once, across studies and restarts.
* Runs are **claimed** with one conditional UPDATE (pending / interrupted / lease expired -> running
  for this worker). The database decides who won; a cell is never trained by two workers.
* A running run holds a **lease** renewed by heartbeats. A killed worker's lease expires and any
  worker (or the next ``ablate run``) takes the run over and resumes it from its checkpoint.

Every write is one short transaction; SQLite transactions start with ``BEGIN IMMEDIATE`` and wait
on a busy timeout, and "database is locked" is retried, so many worker processes can share a file.
Writing a study's cells is one transaction however many cells it has (:meth:`ResultStore.add_trials`).
A file that turns out damaged while in use is bad input naming it (exit 2), never a traceback.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy import (Column, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, bindparam, create_engine, event, func, insert, select, update)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

metadata = MetaData()

studies = Table(
    "studies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan", String(200), nullable=False),          # the study file's `name`
    Column("profile", String(100), nullable=False),
    Column("name", String(100), nullable=False),
    Column("position", Integer, nullable=False),          # order in the study file
    Column("kind", String(20), nullable=False),           # grid | variants | search
    Column("start_from", String(100)),                   # study whose winner is the base
    Column("pin_json", Text),                            # overrides pinned over the winner
    Column("pin_reason", Text),
    Column("base_json", Text, nullable=False),           # resolved base config (flat)
    Column("created_at", Float, nullable=False),
    Column("source", Text),                              # the study file that declares it (resolved path)
    UniqueConstraint("plan", "profile", "name", name="uq_study"),
)

runs = Table(
    "runs", metadata,
    Column("hash", String(32), primary_key=True),        # TrainConfig.identity_hash()
    Column("config_json", Text, nullable=False),
    Column("status", String(20), nullable=False, default="pending"),
    # pending | running | interrupted | done | failed | pruned
    Column("worker", String(200)),
    Column("lease_expires", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("wall_time_s", Float),                        # training time summed over attempts
    Column("device", String(100)),
    Column("params", Integer),                           # number of trainable parameters
    Column("checkpoint_path", Text),
    Column("mlflow_run_id", String(64)),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("step", Integer, nullable=False, default=0),
    Column("final_grader", Float), Column("final_iou", Float), Column("final_si_logrmse", Float),
    Column("best_grader", Float), Column("best_iou", Float), Column("best_si_logrmse", Float),
    Column("best_epoch", Integer),
)

trials = Table(
    "trials", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("variant", String(300), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("run_hash", String(32), ForeignKey("runs.hash")),   # NULL: search cell not sampled yet
    Column("overrides_json", Text),                            # what the variant sets on the base
    Column("optuna_trial", Integer),                           # -1: claimed, being sampled
    Column("optuna_study", String(300)),                       # the Optuna study that trial is in
    Column("claimed_by", String(200)),                         # worker sampling the cell ...
    Column("claim_expires", Float),                            # ... until then (then reclaimable)
    Column("created_at", Float, nullable=False),
    UniqueConstraint("study_id", "variant", "seed", name="uq_trial_cell"),
)

epoch_metrics = Table(
    "epoch_metrics", metadata,
    Column("run_hash", String(32), ForeignKey("runs.hash"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("step", Integer, nullable=False),
    Column("wall_time_s", Float, nullable=False),        # training time at the end of the epoch
    Column("iou", Float), Column("si_logrmse", Float), Column("grader", Float),
    Column("loss", Float), Column("loss_semseg", Float), Column("loss_depth", Float),
    Column("lr", Float),
    Column("iou_per_class_json", Text),
)

step_losses = Table(
    "step_losses", metadata,
    Column("run_hash", String(32), ForeignKey("runs.hash"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("wall_time_s", Float, nullable=False),
    Column("loss", Float), Column("loss_semseg", Float), Column("loss_depth", Float),
)

TERMINAL = ("done", "failed", "pruned")  # a run in one of these is never trained again

# run columns joined onto a trial cell (ResultStore.study_trials, the read-only chain walk)
CELL_RUN_COLUMNS = ("status", "final_grader", "final_iou", "final_si_logrmse", "best_grader", "params",
                    "wall_time_s", "error", "config_json", "mlflow_run_id", "epochs_done", "worker")


@dataclass(frozen=True)
class Cell:
    """One (variant, seed) cell a study declares. ``config_hash`` None: a search cell, not sampled."""
    variant: str
    seed: int
    config: Optional[dict] = None
    config_hash: Optional[str] = None
    overrides: Optional[dict] = None


class SourceConflict(Exception):
    """The study row was written from another study file (``other``) than the one now writing it."""

    def __init__(self, other: str):
        super().__init__(other)
        self.other = other


class _ClaimLost(Exception):
    """Raised inside a transaction to roll it back: the claim it was written under is gone."""


@dataclass(frozen=True)
class ClaimedRun:
    hash: str
    config: dict
    attempts: int
    mlflow_run_id: Optional[str]
    resumed: bool  # True when an earlier attempt had started it


def sqlite_url(path: os.PathLike | str) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path`` (made absolute), built by the URL library:
    a path pasted into the text would turn ``?`` into a query (two workspaces ``x?a`` and ``x?b``
    shared one file outside both) and ``%41`` into ``A``. Round-trips exactly through ``make_url``
    (SQLAlchemy and Optuna); MLflow reads its URI's text itself: see ``sqlite_files.mlflow_sqlite_uri``."""
    return URL.create("sqlite", database=str(Path(path).resolve())).render_as_string(hide_password=False)


def sqlite_path(url: str) -> Optional[Path]:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)



def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised via engine
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised via engine
        # IMMEDIATE takes the write lock up front: no deadlock when a reader later writes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _add_missing_columns(conn) -> None:
    """The schema's only migration: a column added in a later version (all of them nullable,
    e.g. ``trials.optuna_study``) is added to an existing database instead of failing every
    query on it. Stored rows are kept; the new column is NULL in them."""
    from sqlalchemy import inspect

    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


def _claimable(now: float):
    """A run a worker may take: not started, handed back, or running on an expired lease."""
    return (runs.c.status.in_(("pending", "interrupted"))
            | ((runs.c.status == "running") & (runs.c.lease_expires < now)))


class ResultStore:
    """Typed access to the result database. Safe to use from many processes at once."""

    def __init__(self, url: str, *, retries: int = 30):
        self.url = url
        self.retries = retries
        is_sqlite = url.startswith("sqlite")
        self.path = sqlite_path(url) if is_sqlite else None  # named in the message if it is damaged
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = dict(connect_args={"timeout": 60} if is_sqlite else {},
                                      pool_pre_ping=not is_sqlite)
        if is_sqlite and self.path is None:  # in memory: one connection, or each would see its own
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        self.engine = create_engine(url, future=True, **kwargs)
        if is_sqlite:
            _configure_sqlite(self.engine)
        self._retry(self._create_tables)

    @classmethod
    def empty(cls) -> "ResultStore":
        """A store in memory with no rows: what a workspace without a result database reads as
        (read commands answer from the study file and create nothing)."""
        return cls("sqlite://")

    def _create_tables(self) -> None:
        """CREATE TABLE IF NOT EXISTS, once, then add the nullable columns a newer ablate has
        and the database lacks. On PostgreSQL workers that start together would race on the
        catalog, so this runs under a transaction-scoped advisory lock."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                from sqlalchemy import text

                conn.execute(text("SELECT pg_advisory_xact_lock(7371827)"))
            metadata.create_all(conn)
            _add_missing_columns(conn)

    @classmethod
    def for_workspace(cls, workspace: os.PathLike | str) -> "ResultStore":
        return cls(sqlite_url(Path(workspace) / "ablate.db"))

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing -------------------------------------------------------------------------------
    def _retry(self, fn):
        """Run ``fn`` again on a transient "database is locked"/"busy" (SQLite under load). A file
        SQLite finds damaged ("file is not a database", "database disk image is malformed") is
        bad input naming it."""
        for attempt in range(self.retries):
            try:
                return fn()
            except OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or attempt == self.retries - 1:
                    raise
                time.sleep(min(0.05 * (2 ** attempt), 2.0) * (0.5 + random.random()))
            except DatabaseError as exc:
                # the plain class: SQLite's SQLITE_CORRUPT / SQLITE_NOTADB (constraint violations
                # and busy/locked come as its subclasses IntegrityError / OperationalError)
                if type(exc) is not DatabaseError or self.path is None:
                    raise
                from runner.sqlite_files import damaged_store

                raise damaged_store(self.path, "result", str(getattr(exc, "orig", exc))) from None

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self.engine.begin() as conn:
            yield conn

    def _write(self, fn, *, idempotent_insert: bool = False):
        """One transaction. ``idempotent_insert``: ``fn`` checks then inserts; when another worker
        inserted the same row in between (a unique violation under PostgreSQL's read committed),
        run ``fn`` again: its check now sees the row."""
        def run():
            with self._tx() as conn:
                return fn(conn)

        if not idempotent_insert:
            return self._retry(run)
        for attempt in range(10):
            try:
                return self._retry(run)
            except IntegrityError:
                if attempt == 9:
                    raise
                time.sleep(0.01 + 0.01 * random.random())

    def _read(self, fn):
        def run():
            with self.engine.connect() as conn:
                return fn(conn)
        return self._retry(run)

    # -- studies and trials ---------------------------------------------------------------------
    def ensure_study(self, *, plan: str, profile: str, name: str, position: int, kind: str,
                     start_from: Optional[str], pin: Optional[dict], pin_reason: Optional[str],
                     base_config: dict, source: Optional[str] = None, take_over: bool = False) -> int:
        """Create the study row, or bring it up to date with the study file; return its id.

        ``source`` is the study file writing it. A row another file wrote raises
        :class:`SourceConflict` (nothing written) unless ``take_over``: the caller decides whether
        that file is gone or still declares the study (two files with one ``name:`` in one
        workspace would overwrite each other's cells)."""
        values = dict(position=position, kind=kind, start_from=start_from,
                      pin_json=json.dumps(pin, sort_keys=True) if pin else None, pin_reason=pin_reason,
                      base_json=json.dumps(base_config, sort_keys=True))
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

    def find_study(self, plan: str, profile: str, name: str) -> Optional[dict]:
        def fn(conn):
            row = conn.execute(select(studies).where(
                studies.c.plan == plan, studies.c.profile == profile, studies.c.name == name)).first()
            return dict(row._mapping) if row else None
        return self._read(fn)

    def add_trial(self, study_id: int, variant: str, seed: int, *, config: Optional[dict],
                  config_hash: Optional[str], overrides: Optional[dict] = None) -> bool:
        """:meth:`add_trials` for one cell. Returns False if the cell already existed."""
        return self.add_trials(study_id, [Cell(variant, seed, config, config_hash, overrides)]) == 1

    def add_trials(self, study_id: int, cells: Sequence[Cell]) -> int:
        """Write a study's cells (and the runs they point at, if new) in one transaction; return
        how many cells were new.

        An existing grid/variants cell whose config changed (the study file was edited, the base
        moved, or another writer pointed it elsewhere) is pointed at the new config's run; the old
        run stays, keyed by its hash. One SELECT of the study's cells and of the known runs, then
        bulk INSERTs and one UPDATE per changed cell: a 10,000-cell grid was 10,000 transactions.
        Two workers writing the same cells at once: the loser's INSERT violates a unique key and
        the whole transaction runs again (it then sees the winner's rows)."""
        wanted = {(c.variant, c.seed): c for c in cells}
        new_runs = {c.config_hash: c.config for c in wanted.values() if c.config_hash is not None}

        def fn(conn):
            now = time.time()
            stored = {(r.variant, r.seed): r for r in conn.execute(
                select(trials.c.id, trials.c.variant, trials.c.seed, trials.c.run_hash)
                .where(trials.c.study_id == study_id))}
            known: set[str] = set()
            hashes = sorted(new_runs)
            for start in range(0, len(hashes), 500):  # bound the IN list (SQLite's variable limit)
                known.update(h for (h,) in conn.execute(
                    select(runs.c.hash).where(runs.c.hash.in_(hashes[start:start + 500]))))
            missing_runs = [dict(hash=h, config_json=json.dumps(new_runs[h], sort_keys=True), status="pending",
                                 attempts=0, created_at=now, epochs_done=0, step=0)
                            for h in hashes if h not in known]
            if missing_runs:
                conn.execute(insert(runs), missing_runs)
            new_cells, moved = [], []
            for key, cell in wanted.items():
                overrides_json = json.dumps(cell.overrides, sort_keys=True) if cell.overrides is not None else None
                row = stored.get(key)
                if row is None:
                    new_cells.append(dict(study_id=study_id, variant=cell.variant, seed=cell.seed,
                                          run_hash=cell.config_hash, overrides_json=overrides_json,
                                          created_at=now))
                elif cell.config_hash is not None and row.run_hash != cell.config_hash:
                    moved.append(dict(cell_id=row.id, new_hash=cell.config_hash, new_overrides=overrides_json))
            if new_cells:
                conn.execute(insert(trials), new_cells)
            if moved:
                conn.execute(update(trials).where(trials.c.id == bindparam("cell_id")).values(
                    run_hash=bindparam("new_hash"), overrides_json=bindparam("new_overrides")), moved)
            return len(new_cells)
        return self._write(fn, idempotent_insert=True)

    @staticmethod
    def _ensure_run(conn, config_hash: str, config: dict) -> None:
        if not conn.execute(select(runs.c.hash).where(runs.c.hash == config_hash)).first():
            conn.execute(insert(runs).values(
                hash=config_hash, config_json=json.dumps(config, sort_keys=True),
                status="pending", attempts=0, created_at=time.time(), epochs_done=0, step=0))

    def claim_search_cell(self, study_id: int, worker: str, lease_s: float = 120.0) -> Optional[dict]:
        """Atomically take one search cell to sample: unsampled (run_hash NULL, optuna_trial
        NULL), or claimed by a worker whose claim expired before it bound the cell (it died
        between the claim and the bind; a claim without expiry was made by an older ablate).

        The claim (optuna_trial -1) holds for ``lease_s``: sampling takes milliseconds, so a claim
        that outlives it belongs to a dead or stalled worker, and the stalled one's bind is
        refused (:meth:`bind_search_cell`). The UPDATE repeats the condition, so of two workers
        that selected the same cell only one changes it; the other selects again. The row is
        returned as it was before the claim: ``claimed_by`` set means it was taken from a worker
        whose claim expired."""
        def fn(conn):
            now = time.time()  # read under the write lock, as in claim_run
            free = (trials.c.study_id == study_id, trials.c.run_hash.is_(None),
                    trials.c.optuna_trial.is_(None)
                    | ((trials.c.optuna_trial == -1)
                       & (trials.c.claim_expires.is_(None) | (trials.c.claim_expires < now))))
            while True:
                row = conn.execute(select(trials).where(*free).order_by(trials.c.id).limit(1)).first()
                if row is None:
                    return None
                taken = conn.execute(update(trials).where(trials.c.id == row.id, *free).values(
                    optuna_trial=-1, claimed_by=worker, claim_expires=now + lease_s)).rowcount
                if taken == 1:
                    return dict(row._mapping)
        return self._write(fn)

    def bind_search_cell(self, trial_id: int, optuna_study: str, optuna_trial: int, config: dict,
                         config_hash: str, overrides: dict, *, worker: Optional[str] = None) -> bool:
        """Point the cell at the run Optuna's trial asked for. With ``worker``, only while the
        cell is still that worker's claim: False (nothing written) when its claim expired and
        another worker took the cell."""
        mine = (trials.c.claimed_by == worker, trials.c.run_hash.is_(None)) if worker is not None else ()

        def fn(conn):
            self._ensure_run(conn, config_hash, config)
            bound = conn.execute(update(trials).where(trials.c.id == trial_id, *mine).values(
                run_hash=config_hash, optuna_study=optuna_study, optuna_trial=optuna_trial,
                overrides_json=json.dumps(overrides, sort_keys=True), claimed_by=None, claim_expires=None))
            if bound.rowcount != 1:
                raise _ClaimLost  # rolls the run row back with it
        try:
            self._write(fn, idempotent_insert=True)
        except _ClaimLost:
            return False
        return True

    def unbind_search_cells(self, study_id: int, *, keep_optuna_study: str) -> list[dict]:
        """Put back, unsampled, every sampled cell of the study bound in another Optuna study
        than ``keep_optuna_study`` (its base moved: the search starts over on the new base).
        Returns the cells as they were; their runs stay in the store, keyed by hash."""
        stale = (trials.c.study_id == study_id, trials.c.optuna_study.is_not(None),
                 trials.c.optuna_study != keep_optuna_study)

        def fn(conn):
            rows = [dict(r._mapping) for r in conn.execute(select(trials).where(*stale)).all()]
            for row in rows:  # conditional: a cell another worker already put back is left alone
                conn.execute(update(trials).where(trials.c.id == row["id"],
                                                  trials.c.optuna_study == row["optuna_study"]).values(
                    run_hash=None, optuna_study=None, optuna_trial=None, overrides_json=None))
            return rows
        return self._write(fn)

    def release_search_cell(self, trial_id: int, worker: Optional[str] = None) -> None:
        """Put a claimed cell back unsampled (its sampling failed); with ``worker``, only if the
        claim is still that worker's."""
        mine = (trials.c.claimed_by == worker,) if worker is not None else ()
        self._write(lambda conn: conn.execute(update(trials).where(
            trials.c.id == trial_id, trials.c.run_hash.is_(None), *mine).values(
            optuna_trial=None, claimed_by=None, claim_expires=None)))

    # -- claiming and leases --------------------------------------------------------------------
    def claim_run(self, run_hash: str, worker: str, lease_s: float) -> Optional[ClaimedRun]:
        """Take ``run_hash`` for ``worker`` if nobody holds a live lease on it. Atomic."""
        def fn(conn):
            # The clock is read once the write lock is held: a claim that waited on a busy
            # database must neither see leases as live that expired meanwhile nor start its own
            # lease in the past (it would expire early and the run be trained twice).
            now = time.time()
            result = conn.execute(update(runs).where(
                runs.c.hash == run_hash, _claimable(now),
            ).values(status="running", worker=worker, lease_expires=now + lease_s,
                     attempts=runs.c.attempts + 1, error=None,
                     started_at=func.coalesce(runs.c.started_at, now)))
            if result.rowcount != 1:
                return None
            row = conn.execute(select(runs).where(runs.c.hash == run_hash)).one()
            return ClaimedRun(hash=row.hash, config=json.loads(row.config_json),
                              attempts=row.attempts,
                              mlflow_run_id=row.mlflow_run_id, resumed=row.attempts > 1)
        return self._write(fn)

    def claimable_runs(self, study_ids: list[int]) -> list[str]:
        """Run hashes of these studies that a worker could claim now, in study/trial order.
        Failed runs are not: ``ablate run --retry-failed`` makes them pending (reset_failed)."""
        now = time.time()

        def fn(conn):
            rows = conn.execute(
                select(runs.c.hash).select_from(trials.join(runs, trials.c.run_hash == runs.c.hash)
                                                .join(studies, trials.c.study_id == studies.c.id))
                .where(trials.c.study_id.in_(study_ids), _claimable(now))
                .order_by(studies.c.position, trials.c.id)).all()
            seen, ordered = set(), []
            for (h,) in rows:
                if h not in seen:
                    seen.add(h)
                    ordered.append(h)
            return ordered
        return self._read(fn)

    def heartbeat(self, run_hash: str, worker: str, lease_s: float, *, epochs_done: int | None = None,
                  step: int | None = None) -> bool:
        """Renew the lease. False means another worker took the run over (ours expired)."""
        values: dict[str, Any] = {}
        if epochs_done is not None:
            values["epochs_done"] = epochs_done
        if step is not None:
            values["step"] = step

        def fn(conn):  # the new expiry is counted from when the write lock is held
            return conn.execute(update(runs).where(
                runs.c.hash == run_hash, runs.c.worker == worker, runs.c.status == "running"
            ).values(lease_expires=time.time() + lease_s, **values)).rowcount == 1
        return self._write(fn)

    def update_run(self, run_hash: str, **values) -> None:
        self._write(lambda conn: conn.execute(update(runs).where(runs.c.hash == run_hash).values(**values)))

    def update_own_run(self, run_hash: str, worker: str, **values) -> bool:
        """``update_run`` while ``worker`` holds the run; False (nothing written) otherwise."""
        return self._write(lambda conn: conn.execute(update(runs).where(
            runs.c.hash == run_hash, runs.c.worker == worker, runs.c.status == "running"
        ).values(**values)).rowcount == 1)

    def holds(self, run_hash: str, worker: str) -> bool:
        """Does ``worker`` still hold ``run_hash``? Asked right before a write the store cannot
        make conditional (MLflow, Optuna): a takeover changes ``worker`` in the same UPDATE."""
        return self._read(lambda conn: conn.execute(select(runs.c.hash).where(
            runs.c.hash == run_hash, runs.c.worker == worker, runs.c.status == "running")).first() is not None)

    def hand_back_runs_of(self, worker: str, reason: str) -> list[dict]:
        """Mark every run ``worker`` still holds ``interrupted`` with ``reason`` (the worker is
        known dead: its runs need not wait for their leases). Returns the runs as they were."""
        held = (runs.c.worker == worker, runs.c.status == "running")

        def fn(conn):
            rows = [dict(r._mapping) for r in conn.execute(select(runs).where(*held)).all()]
            for row in rows:
                conn.execute(update(runs).where(runs.c.hash == row["hash"], *held).values(
                    status="interrupted", lease_expires=None, error=reason, finished_at=time.time()))
            return rows
        return self._write(fn)

    def finish_run(self, run_hash: str, worker: str, status: str, **values) -> bool:
        """Move our run to ``status`` (done/failed/pruned/interrupted). False if not ours anymore."""
        def fn(conn):
            return conn.execute(update(runs).where(
                runs.c.hash == run_hash, runs.c.worker == worker, runs.c.status == "running"
            ).values(status=status, lease_expires=None, finished_at=time.time(), **values)).rowcount == 1
        return self._write(fn)

    def reset_failed(self, study_ids: list[int]) -> int:
        """Make failed runs of these studies pending again (``--retry-failed``)."""
        def fn(conn):
            hashes = select(trials.c.run_hash).where(trials.c.study_id.in_(study_ids))
            return conn.execute(update(runs).where(runs.c.hash.in_(hashes), runs.c.status == "failed")
                                .values(status="pending", error=None)).rowcount
        return self._write(fn)

    # -- metrics --------------------------------------------------------------------------------
    def record_epoch(self, run_hash: str, row: dict) -> None:
        """Idempotent per (run, epoch): a resumed epoch overwrites what a killed attempt wrote."""
        def fn(conn):
            conn.execute(epoch_metrics.delete().where(
                epoch_metrics.c.run_hash == run_hash, epoch_metrics.c.epoch == row["epoch"]))
            conn.execute(insert(epoch_metrics).values(run_hash=run_hash, **row))
        self._write(fn)

    def record_steps(self, run_hash: str, rows: list[dict]) -> None:
        """One transaction per batch of steps; rows of a replayed step replace the old ones."""
        if not rows:
            return
        steps = [r["step"] for r in rows]

        def fn(conn):
            conn.execute(step_losses.delete().where(step_losses.c.run_hash == run_hash,
                                                    step_losses.c.step.in_(steps)))
            conn.execute(insert(step_losses), [dict(run_hash=run_hash, **r) for r in rows])
        self._write(fn)

    def truncate_history(self, run_hash: str, after_step: int, after_epoch: int) -> None:
        """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
        def fn(conn):
            conn.execute(step_losses.delete().where(step_losses.c.run_hash == run_hash,
                                                    step_losses.c.step > after_step))
            conn.execute(epoch_metrics.delete().where(epoch_metrics.c.run_hash == run_hash,
                                                      epoch_metrics.c.epoch > after_epoch))
        self._write(fn)

    # -- queries --------------------------------------------------------------------------------
    def run(self, run_hash: str) -> Optional[dict]:
        def fn(conn):
            row = conn.execute(select(runs).where(runs.c.hash == run_hash)).first()
            return dict(row._mapping) if row else None
        return self._read(fn)

    def study_trials(self, study_id: int) -> list[dict]:
        """Trials of a study joined with their runs (run columns prefixed ``run_`` where clashing)."""
        def fn(conn):
            rows = conn.execute(
                select(trials, *(runs.c[name] for name in CELL_RUN_COLUMNS))
                .select_from(trials.outerjoin(runs, trials.c.run_hash == runs.c.hash))
                .where(trials.c.study_id == study_id).order_by(trials.c.id)).all()
            return [dict(r._mapping) for r in rows]
        return self._read(fn)

    def runs_by_hash(self, hashes: Sequence[str]) -> dict[str, dict]:
        """{hash: run row} of the runs among ``hashes`` that exist, in one read."""
        wanted = sorted(set(hashes))

        def fn(conn):
            found = {}
            for start in range(0, len(wanted), 500):  # bound the IN list (SQLite's variable limit)
                for row in conn.execute(select(runs).where(runs.c.hash.in_(wanted[start:start + 500]))):
                    found[row.hash] = dict(row._mapping)
            return found
        return self._read(fn)

    def trials_of_run(self, run_hash: str) -> list[dict]:
        """Every cell that points at ``run_hash`` (one run may serve several studies)."""
        def fn(conn):
            rows = conn.execute(
                select(trials, studies.c.name.label("study"), studies.c.plan, studies.c.profile)
                .select_from(trials.join(studies, trials.c.study_id == studies.c.id))
                .where(trials.c.run_hash == run_hash).order_by(trials.c.id)).all()
            return [dict(r._mapping) for r in rows]
        return self._read(fn)

"""The store's plumbing: the engine, SQLite's pragmas, transactions, retries, opening the schema.

Every write is one short transaction. On SQLite it starts with ``BEGIN IMMEDIATE`` (the write
lock up front: no deadlock when a reader later writes) and waits on a busy timeout, and "database
is locked" is retried with backoff, so many worker processes can share one file. A file SQLite
finds damaged while in use is bad input naming it (exit 2), never a traceback.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from runner.sqlite_files import damaged_store, sqlite_path
from runner.store._schema import prepare_schema

T = TypeVar("T")

# Any fixed key works: the same in every ablate process that opens the database.
_PG_CREATE_LOCK_KEY = 7371827
_MEMORY = "sqlite://"


def _make_engine(url: str, *, read_only: bool) -> Engine:
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = dict(connect_args={"timeout": 60} if is_sqlite else {},
                                  pool_pre_ping=not is_sqlite)
    if is_sqlite and sqlite_path(url) is None:  # in memory: one connection, or each would see its own
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(url, future=True, **kwargs)
    if is_sqlite:
        _configure_sqlite(engine, read_only=read_only)
    return engine


def _configure_sqlite(engine: Engine, *, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock up front: no deadlock when a reader later writes. A
        # read-only store never writes, so it does not hold writers up.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class StoreBase:
    """Engine, transactions and retries shared by the parts of :class:`runner.store.ResultStore`."""

    def __init__(self, url: str, *, retries: int = 30, read_only: bool = False):
        """Open the database at ``url``; create schema 2 in it if it holds none of ablate's tables.

        ``read_only`` (the read commands): nothing is created or written; a database without
        ablate's tables reads as empty. Either way a database of an earlier or newer ablate is
        refused (:class:`ablations.errors.InputError`, one line, nothing written)."""
        self.url = url
        self.retries = retries
        self.read_only = read_only
        self.path = sqlite_path(url)  # named in the message if it is damaged
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _make_engine(url, read_only=read_only)
        absent = read_only and self.path is not None and not self.path.exists()  # SQLite would create it
        if absent or not self._retry(lambda: self._prepare(create=not read_only)):
            # nothing of ablate's there yet: answer from an empty schema in memory, create nothing
            self.engine.dispose()
            self.engine, self.path = _make_engine(_MEMORY, read_only=False), None
            self._retry(lambda: self._prepare(create=True))

    @classmethod
    def empty(cls):
        """A read-only store with no rows: what a workspace without a result database reads as
        (read commands answer from the study file and create nothing)."""
        return cls(_MEMORY, read_only=True)

    def close(self) -> None:
        self.engine.dispose()

    def _where(self) -> str:
        """The database as messages name it: its file, or its URL with the password masked."""
        if self.path is not None:
            return str(self.path)
        return make_url(self.url).render_as_string(hide_password=True)

    def _prepare(self, *, create: bool) -> bool:
        """Check (and with ``create`` make) the schema in one transaction. On PostgreSQL, workers
        that start together would race on the catalog: a transaction-scoped advisory lock makes
        them take turns."""
        with self.engine.begin() as conn:
            if create and self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CREATE_LOCK_KEY})
            return prepare_schema(conn, self._where(), local_file=self.path is not None, create=create)

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` again on a transient "database is locked"/"busy" (SQLite under load). A file
        SQLite finds damaged ("file is not a database", "database disk image is malformed") is
        bad input naming it."""
        for attempt in range(max(1, self.retries)):
            try:
                return fn()
            except OperationalError as exc:
                message = str(exc).lower()
                if ("locked" not in message and "busy" not in message) or attempt >= self.retries - 1:
                    raise
                time.sleep(min(0.05 * (2 ** attempt), 2.0) * (0.5 + random.random()))
            except DatabaseError as exc:
                # the plain class: SQLite's SQLITE_CORRUPT / SQLITE_NOTADB (constraint violations
                # and busy/locked come as its subclasses IntegrityError / OperationalError)
                if type(exc) is not DatabaseError or self.path is None:
                    raise
                raise damaged_store(self.path, "result", str(getattr(exc, "orig", exc))) from None

    def _write(self, fn: Callable[[Any], T], *, idempotent_insert: bool = False) -> T:
        """``fn(conn)`` in one transaction. ``idempotent_insert``: ``fn`` checks then inserts; when
        another worker inserted the same row in between (a unique violation under PostgreSQL's
        read committed), run ``fn`` again: its check now sees the row."""
        if self.read_only:
            raise RuntimeError(f"{self._where()}: the result store was opened read-only")

        def run():
            with self.engine.begin() as conn:
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

    def _read(self, fn: Callable[[Any], T]) -> T:
        def run():
            with self.engine.connect() as conn:
                return fn(conn)
        return self._retry(run)

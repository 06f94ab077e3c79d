"""An exclusive lock between processes on one machine, held on a file in the workspace.

Used where an engine we rely on is not safe from several processes at once on first use: MLflow's
SQLite store runs its schema migrations when it is opened, and two ``ablate run`` started together
on a new workspace died in them ("table _alembic_tmp_runs already exists", "duplicate column").
The kernel releases the lock when the process dies, so a killed holder never blocks the next one.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusive_lock(path: os.PathLike | str) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``path`` (created if missing) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# Any fixed key works: it only has to be the same in every ablate process using the database.
_PG_PREPARE_LOCK_KEY = 7371828


@contextmanager
def database_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, hold a session advisory lock of that database for the ``with`` block, so
    ablate processes on different machines prepare it one at a time (Optuna's first
    ``CREATE TYPE`` / ``CREATE TABLE`` failed with a unique violation on ``pg_type`` for 2-4 of 8
    processes started together). Other URLs: nothing to do, the file lock covers one machine."""
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_PREPARE_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_PREPARE_LOCK_KEY})
    finally:
        engine.dispose()

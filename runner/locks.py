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

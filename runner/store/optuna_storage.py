"""Optuna's storage (an ``RDBStorage`` on SQLite in the workspace, or on PostgreSQL): opened with
the settings many workers need, and prepared once before they start.

Why here: Optuna's storage is a store like the result database, with the same concerns (a busy
SQLite file shared by worker processes; a first ``CREATE`` racing across machines)."""
from __future__ import annotations

from runner.locks import database_lock


def open_optuna_storage(url: str):
    """Optuna's ``RDBStorage`` at ``url``. SQLite: a generous busy timeout (many workers may share
    the file; WAL is set by the result store's engine on the workspace's files). Elsewhere: no
    heartbeat thread (a run's liveness is the result store's lease, not Optuna's)."""
    import optuna

    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url, heartbeat_interval=None)


def prepare_optuna_storage(url: str) -> None:
    """Create Optuna's tables once, before workers open the storage: its first-time CREATE is
    not safe from several processes at once (on PostgreSQL: unique violation on ``pg_type``), so
    it runs under :func:`runner.locks.database_lock` (on one machine the caller holds the
    workspace's file lock)."""
    with database_lock(url):
        open_optuna_storage(url).engine.dispose()

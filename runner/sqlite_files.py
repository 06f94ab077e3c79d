"""The SQLite files of a workspace (``ablate.db``, ``mlflow.db``, ``optuna.db``): named by exact URLs
(:func:`sqlite_url`, :func:`sqlite_path`), checked before any library opens one, and created so
that a kill cannot leave one half made. A shared leaf: the result store, tracking and Optuna's
storage use it, and it imports none of them.

Why: SQLite opens whatever file it is given. A garbage or truncated file made every command end
in a ``DatabaseError`` traceback; a zero-length one is a valid *empty* database, so a truncated
``ablate.db`` silently became a new store (results rebuilt from checkpoints without their epoch
history, a second MLflow run per trial); another program's database got ablate's tables added to
it; and MLflow's first-use migrations, killed half-way, left an ``mlflow.db`` that every later run
failed on. So before a store is opened, :func:`check_store_file` answers what the file is:

* missing, or zero-length in a workspace that holds nothing else: a new store (``"new"``);
* zero-length where the workspace already has checkpoints (``runs/``) or another non-empty
  store: bad input, named; ablate does not guess that it may start over;
* not an SQLite file, unreadable, or the database of another program: bad input, named;
  the file is left exactly as it is;
* otherwise ``"ok"``.

Stores ablate creates through a library (MLflow's, Optuna's) are built by
:func:`create_atomically` in a temporary file next to the target and renamed into place once the
library finished, so the target is either absent or complete. Callers hold the workspace's
``.prepare.lock`` while they create.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy.engine import URL, make_url

from ablations.errors import InputError

SQLITE_HEADER = b"SQLite format 3\x00"

# kind -> (what it is called in messages, the tables that make a database one of that kind,
#          what the user loses by starting that store anew)
KINDS = {
    "result": ("ablate's result database", {"studies", "runs", "trials"},
               "finished trials are then rebuilt from their checkpoints in runs/ without their epoch history"),
    "mlflow": ("the MLflow store", {"experiments"},
               "earlier MLflow runs are then no longer shown, and resumed trials open new ones"),
    "optuna": ("Optuna's storage", {"version_info"},
               "search studies then sample anew"),
}
STORE_FILES = ("ablate.db", "mlflow.db", "optuna.db")
_JOURNALS = ("-journal", "-wal", "-shm")


def sqlite_url(path: os.PathLike | str) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path`` (made absolute), built by the URL library:
    a path pasted into the text would turn ``?`` into a query (two workspaces ``x?a`` and ``x?b``
    shared one file outside both) and ``%41`` into ``A``. Round-trips exactly through ``make_url``
    (SQLAlchemy and Optuna); MLflow reads its URI's text itself: see :func:`mlflow_sqlite_uri`."""
    return URL.create("sqlite", database=str(Path(path).resolve())).render_as_string(hide_password=False)


def sqlite_path(url: str) -> Optional[Path]:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def damaged_store(path: os.PathLike | str, kind: str, reason: str) -> InputError:
    """The bad-input error (exit 2) for a store file that exists but cannot be used as ``kind``."""
    what, _, loss = KINDS[kind]
    return InputError(f"{path}: cannot be used as {what}: {reason}. ablate leaves the file as it is: "
                      f"restore it from a backup, or move it away to start a new one ({loss})")


def check_store_file(path: os.PathLike | str, kind: str, workspace: os.PathLike | str) -> str:
    """``"new"`` (no file, or an empty one ablate may fill) or ``"ok"``; raises :class:`InputError`
    naming the file for anything else (see the module docstring). Reads the header and the schema
    only (SQLite's own recovery aside: it rolls back a journal a killed writer left)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise damaged_store(path, kind, exc.strerror or str(exc)) from None
    if size == 0:
        others = workspace_state(workspace, besides=path)
        if others:
            raise damaged_store(path, kind, f"the file is empty (0 bytes) but the workspace already holds "
                                f"{', '.join(others)}, so it was probably truncated")
        return "new"
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise damaged_store(path, kind, exc.strerror or str(exc)) from None
    if header != SQLITE_HEADER:
        raise damaged_store(path, kind, "not an SQLite database (garbage or an overwritten file)")
    tables = _tables(path, kind)
    if tables and not KINDS[kind][1] <= tables and not _unfinished_mlflow(kind, tables):
        raise damaged_store(path, kind, f"the SQLite database of another program (its tables: "
                            f"{', '.join(sorted(tables)[:6])}{', ...' if len(tables) > 6 else ''})")
    return "ok"


def _unfinished_mlflow(kind: str, tables: set[str]) -> bool:
    """MLflow's migrations killed before they created ``experiments``: MLflow's, to be redone."""
    return kind == "mlflow" and "alembic_version" in tables


def _tables(path: Path, kind: str) -> set[str]:
    """The table names of the SQLite file at ``path``. Only reads; opened read-write all the
    same, as a read-only connection cannot roll back the journal a killed writer left (SQLite's own
    recovery, which any connection performs first)."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise damaged_store(path, kind, str(exc)) from None
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            return set()  # a writer holds it: a live store, checked by its library when opened
        raise damaged_store(path, kind, str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise damaged_store(path, kind, str(exc)) from None
    finally:
        db.close()


def workspace_state(workspace: os.PathLike | str, besides: Optional[Path] = None) -> list[str]:
    """What the workspace holds that only a run can have written: checkpoints under ``runs/`` and
    the non-empty store files other than ``besides``."""
    workspace = Path(workspace)
    found = []
    runs = workspace / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        found.append(f"checkpoints ({runs})")
    for name in STORE_FILES:
        other = workspace / name
        if besides is not None and other.resolve() == Path(besides).resolve():
            continue
        try:
            if other.stat().st_size > 0:
                found.append(name)
        except OSError:
            pass
    return found


def create_atomically(path: os.PathLike | str, build: Callable[[Path], None]) -> None:
    """Make the store file ``path`` with ``build(tmp)`` in a temporary file next to it, then rename
    it into place: a kill during ``build`` leaves ``path`` as it was (absent, or the unfinished file
    this replaces) and the next call starts over. Any journal of the file being replaced is removed
    first: SQLite would roll it back into the new file. The caller holds the workspace lock."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.creating")
    for leftover in (tmp, *(tmp.with_name(tmp.name + j) for j in _JOURNALS)):
        leftover.unlink(missing_ok=True)  # a creation that was killed
    build(tmp)
    for journal in _JOURNALS:
        path.with_name(path.name + journal).unlink(missing_ok=True)
    os.replace(tmp, path)

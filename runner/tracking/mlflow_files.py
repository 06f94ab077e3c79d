"""MLflow's SQLite store file (``<workspace>/mlflow.db``): its URI, and building it so that a kill
cannot leave it half made.

MLflow's first use of a new store runs dozens of schema migrations, each committed on its own:
killed half-way, the file made every later run fail ("table ... already exists", "duplicate column
name"). So :func:`prepare_mlflow_file` builds the store in a temporary file and renames it into
place (:func:`runner.sqlite_files.create_atomically`), after :func:`runner.sqlite_files.check_store_file`
has said the file is not damaged or another program's. mlflow is imported only inside functions.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Optional

from ablations.errors import InputError
from runner.sqlite_files import check_store_file, create_atomically


def sqlite_file(uri: str) -> Optional[Path]:
    """The file of an SQLite tracking URI, as SQLAlchemy (and so MLflow) opens it; None for any
    other URI (a server, PostgreSQL, an in-memory database)."""
    if not uri.lower().startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.get_backend_name().lower() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


def mlflow_sqlite_uri(path: os.PathLike | str) -> str:
    """MLflow's tracking URI for the SQLite file ``path``: ``sqlite:///<absolute path>`` as plain text.

    MLflow takes the file's directory from the URI text itself and creates it, so the URL library's
    escapes (``%3F`` for ``?``) made it create a directory of that escaped name outside the
    workspace. The plain text is exact unless the path holds ``?`` (read as a query) or ``%``
    (percent-decoded): such a path is refused, naming the workspace and the character."""
    from sqlalchemy.engine import make_url

    path = Path(path).resolve()
    uri = f"sqlite:///{path}"
    if make_url(uri).database != str(path):
        bad = next((c for c in "?%" if c in str(path)), "?")
        raise InputError(f"workspace {path.parent}: its path contains {bad!r}, which MLflow's SQLite "
                         f"tracking URI cannot carry (MLflow would write elsewhere); use a workspace path "
                         f"without {bad!r}, or --tracking-uri")
    return uri


def mlflow_store_unfinished(path: os.PathLike | str) -> bool:
    """Is ``path`` an MLflow SQLite store whose creation was cut short (its migrations not all
    recorded) and that holds no run, so that redoing it loses nothing? A store with runs is never
    redone: an older schema is MLflow's to upgrade, and it says so."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True, timeout=60)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "runs" in tables and db.execute("SELECT 1 FROM runs LIMIT 1").fetchone():
            return False
        if "alembic_version" not in tables:
            return True
        versions = [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]
    finally:
        db.close()
    return versions != [_get_latest_schema_revision()]


def prepare_mlflow_file(path: os.PathLike | str, artifact_location: str, workspace: os.PathLike | str) -> None:
    """Make ``path`` a complete MLflow store: created (or redone, see :func:`mlflow_store_unfinished`)
    with :func:`create_atomically` when it is missing, empty in a new workspace, or unfinished.
    The caller holds the workspace's ``.prepare.lock``."""
    if check_store_file(path, "mlflow", workspace) == "ok" and not mlflow_store_unfinished(path):
        return

    def build(tmp: Path) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(mlflow_sqlite_uri(tmp), artifact_location).engine.dispose()

    create_atomically(path, build)

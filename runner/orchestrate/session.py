"""A study file opened against its workspace: the plan, the result store and tracking URIs.

Workspace precedence: ``--workspace`` (relative to the current directory) > the study file's
``workspace`` key (relative to the study file's directory) > ``./ablate-runs``. Everything a run
writes lives under it (SPEC §6); deleting it is a full reset.

Opened ``read_only`` (status, results, inspect, report), a session creates nothing: a workspace or
result database that does not exist yet reads as an empty store. Every SQLite file of the workspace
is checked before a library opens it (:mod:`runner.sqlite_files`): a damaged one is bad input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablations import StudyPlan, load_study_file
from ablations.errors import InputError
from runner.sqlite_files import check_store_file
from runner.tracking.mlflow_files import mlflow_sqlite_uri
from runner.store import ResultStore, sqlite_path, sqlite_url
from runner.tracking.mlflow_tracker import is_tracking_server

DEFAULT_WORKSPACE = Path("ablate-runs")


@dataclass
class Session:
    study_file: Path
    plan: StudyPlan
    workspace: Path
    store: ResultStore
    tracking_uri: str
    artifact_location: Optional[str]  # None: the tracking server chooses (its proxied artifact store)
    optuna_storage: str
    _optuna: Any = field(default=None, repr=False, compare=False)  # built on first use: optuna()

    @property
    def profile(self) -> str:
        return self.plan.profile or "default"

    @property
    def experiment(self) -> str:
        """One MLflow experiment per study file (and profile, which changes every number)."""
        return f"{self.plan.name}-{self.profile}"

    @classmethod
    def open(cls, study_file: Path, *, profile: Optional[str] = None, workspace: Optional[Path] = None,
             db_url: Optional[str] = None, tracking_uri: Optional[str] = None,
             optuna_storage: Optional[str] = None, read_only: bool = False) -> "Session":
        """``read_only``: for commands that only read (nothing is created; see the module docstring)."""
        plan = load_study_file(study_file, profile)
        ws = workspace_path(Path(study_file), plan, workspace)
        db_url_given = db_url is not None
        db_url = db_url or sqlite_url(ws / "ablate.db")
        if optuna_storage and optuna_storage == db_url:
            raise InputError(f"--optuna-storage {safe_url(optuna_storage)}: Optuna needs a database of its own "
                             "(its tables 'studies' and 'trials' clash with the result store's)")
        # MLflow's and Optuna's files are checked where they are used: by a run here; by a read
        # command only if it hands one to its library (the report, to MLflow), and then
        if tracking_uri is None:
            mlflow_db = ws / "mlflow.db"
            if read_only:
                tracking_uri = sqlite_url(mlflow_db)
            else:
                tracking_uri = mlflow_sqlite_uri(mlflow_db)
                check_store_file(mlflow_db, "mlflow", ws)
        if optuna_storage is None:
            optuna_storage = sqlite_url(ws / "optuna.db")
            if not read_only:
                check_store_file(ws / "optuna.db", "optuna", ws)
        if not read_only:
            ensure_workspace(ws)
        store = open_result_store(db_url, given=db_url_given, workspace=ws, read_only=read_only)
        # Through an MLflow server, artifacts go through it too (its --serve-artifacts store), so
        # its UI shows sample images and reports from any host; a local store keeps them here.
        artifact_location = None if is_tracking_server(tracking_uri) else (ws / "mlartifacts").as_uri()
        return cls(study_file=Path(study_file), plan=plan, workspace=ws, store=store,
                   tracking_uri=tracking_uri, artifact_location=artifact_location,
                   optuna_storage=optuna_storage)

    def optuna(self):
        """Optuna's storage, built once per session: an ``RDBStorage`` runs its schema checks
        and opens an engine when built, which every ask and tell would otherwise repeat."""
        if self._optuna is None:
            from runner.orchestrate.search import open_optuna_storage

            self._optuna = open_optuna_storage(self.optuna_storage)
        return self._optuna

    def run_dir(self, run_hash: str) -> Path:
        return self.workspace / "runs" / run_hash


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL (e.g. http://): shown as given
        return url


def store_error(option: str, url: str, exc: BaseException, problem: str = "cannot open the database",
                hint: str = "") -> InputError:
    """The bad-input error (exit 2) for a store URL that cannot be used: ``<option> <url>:
    <problem>: <reason><hint>``, the password masked in the URL and in the reason. The reason is the
    first non-empty line of the driver's error (of ``exc`` itself when it wraps none), else the
    exception's type name; a missing driver module (ImportError) says so."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    if isinstance(exc, ImportError):
        reason = f"its database driver is not installed ({reason})"
    password = _password(url)
    if password and len(password) >= 3:  # a driver may echo the URL or DSN back
        reason = reason.replace(password, "***")
    return InputError(f"{option} {safe_url(url)}: {problem}: {reason[:300]}{hint}")


def _password(url: str) -> Optional[str]:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password or None
    except Exception:  # noqa: BLE001 - not a database URL
        return None


def open_result_store(url: str, *, given: bool = True, workspace: Optional[Path] = None,
                      read_only: bool = False) -> ResultStore:
    """The result store at ``url``; a URL that is not one, a database driver that is not
    installed, a database that cannot be reached, or an SQLite file that is damaged or another
    program's is bad input (exit 2) named by its option or file, not a traceback.

    ``read_only``: an SQLite file that does not exist yet (or is empty in a workspace that holds
    nothing else) is not created; the store reads as empty."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    option = "--db" if given else "result store"
    try:
        path = sqlite_path(url)
    except (ArgumentError, ValueError):
        path = None  # not a URL: said below, by the option
    if path is not None:
        state = check_store_file(path, "result", workspace if workspace is not None else path.parent)
        if read_only and state == "new":
            return ResultStore.empty()
    try:
        return ResultStore(url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise store_error(option, url, exc, "not a database URL",
                          "; expected e.g. sqlite:////abs/path/ablate.db or postgresql+psycopg2://user@host/dbname") from None
    except (ImportError, OperationalError) as exc:
        raise store_error(option, url, exc) from None


def mlflow_unreachable(uri: str, exc: BaseException) -> InputError:
    """The error for a tracking store that cannot be reached or opened (bad input, exit 2)."""
    return store_error("--tracking-uri", uri, exc, "cannot reach the MLflow tracking store")


def workspace_path(study_file: Path, plan: StudyPlan, given: Optional[Path]) -> Path:
    """The workspace directory (absolute, not created): ``given`` (``--workspace``) relative to the
    current directory, else the study file's ``workspace:`` relative to the study file, else
    ``./ablate-runs``. A study file names its workspace next to itself, wherever it is run from."""
    if given is not None:
        path = Path(given).expanduser()
    elif plan.workspace:
        path = Path(plan.workspace).expanduser()
        if not path.is_absolute():
            path = Path(study_file).resolve().parent / path
    else:
        path = DEFAULT_WORKSPACE
    return path.resolve()


def ensure_workspace(path: Path) -> Path:
    """``path`` resolved and created; one that cannot be a directory is bad input (exit 2)."""
    ws = Path(path).expanduser().resolve()
    try:
        ws.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--workspace {path}: cannot be used as the workspace directory "
                         f"({exc.strerror}: {exc.filename})") from None
    return ws


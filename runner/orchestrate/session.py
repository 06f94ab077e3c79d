"""A study file opened against its workspace: the plan, the result store and tracking URIs.

Workspace precedence: ``--workspace`` (relative to the current directory) > the study file's
``workspace`` key (relative to the study file's directory) > ``./ablate-runs``. Everything a run
writes lives under it (SPEC §6); deleting it is a full reset.

Opened ``read_only`` (status, results, inspect, report), a session creates nothing: a workspace or
result database that does not exist yet reads as an empty store. Every SQLite file of the workspace
is checked before a library opens it (:mod:`runner.sqlite_files`): a damaged one is bad input.
The session holds the study file's task (``plan.task``) and opens the experiment's tracker on
first use (:func:`runner.tracking.open_tracker`): nothing here knows MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablations import StudyPlan, Task, load_study_file
from ablations.errors import InputError
from runner.orchestrate.provenance import strict_plan
from runner.sqlite_files import check_store_file, sqlite_path, sqlite_url
from runner.store import ResultStore
from runner.urls import safe_url, store_error
from runner.tracking import is_tracking_server, workspace_tracking_file, workspace_tracking_uri

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
    local_tracking: bool = True  # the workspace's own tracker store (no --tracking-uri)
    rehearsal: bool = False  # `ablate run --rehearse`: its own experiment (runner/orchestrate/rehearsal.py)
    _optuna: Any = field(default=None, repr=False, compare=False)  # built on first use: optuna()
    _tracker: Any = field(default=None, repr=False, compare=False)  # built on first use: tracker()

    @property
    def task(self) -> Task:
        return self.plan.task

    @property
    def profile(self) -> str:
        return self.plan.profile or "default"

    @property
    def experiment(self) -> str:
        """One tracker experiment per study file (and profile, which changes every number); a
        rehearsal's runs go to one of their own, so the real experiment stays clean."""
        return f"{self.plan.name}-{self.profile}" + ("-rehearsal" if self.rehearsal else "")

    @classmethod
    def open(cls, study_file: Path, *, profile: Optional[str] = None, workspace: Optional[Path] = None,
             db_url: Optional[str] = None, tracking_uri: Optional[str] = None,
             optuna_storage: Optional[str] = None, read_only: bool = False) -> "Session":
        """``read_only``: for commands that only read (nothing is created; see the module docstring)."""
        # identity: {code: strict}: today's code version is part of every trial's identity
        plan = strict_plan(load_study_file(study_file, profile))
        ws = workspace_path(Path(study_file), plan, workspace)
        db_url_given = db_url is not None
        db_url = db_url or sqlite_url(ws / "ablate.db")
        if optuna_storage and optuna_storage == db_url:
            raise InputError(f"--optuna-storage {safe_url(optuna_storage)}: Optuna needs a database of its own "
                             "(its tables 'studies' and 'trials' clash with the result store's)")
        # MLflow's and Optuna's files are checked where they are used: by a run here; by a read
        # command only if it hands one to its library (the report, to MLflow), and then
        local_tracking = tracking_uri is None
        if local_tracking:
            tracker_file = workspace_tracking_file(ws)
            if read_only:  # not handed to the tracker: see report_tracker
                tracking_uri = sqlite_url(tracker_file)
            else:
                tracking_uri = workspace_tracking_uri(ws)
                check_store_file(tracker_file, "mlflow", ws)
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
                   optuna_storage=optuna_storage, local_tracking=local_tracking)

    def optuna(self):
        """Optuna's storage, built once per session: an ``RDBStorage`` runs its schema checks
        and opens an engine when built, which every ask and tell would otherwise repeat."""
        if self._optuna is None:
            from runner.store import open_optuna_storage

            self._optuna = open_optuna_storage(self.optuna_storage)
        return self._optuna

    def tracker(self):
        """The experiment's tracker (MLflow, or none for ``--tracking-uri none``), opened once."""
        if self._tracker is None:
            from runner.tracking import open_tracker

            self._tracker = open_tracker(self.tracking_uri, self.experiment, self.artifact_location)
        return self._tracker

    def report_tracker(self):
        """The tracker a read command (the report) logs to: the given ``--tracking-uri``'s, or the
        workspace's own store once a run has made it; None before (nothing ran there, and a
        report creates no tracker store)."""
        if not self.local_tracking:
            return self.tracker()
        tracker_file = workspace_tracking_file(self.workspace)
        if not tracker_file.is_file():
            return None
        check_store_file(tracker_file, "mlflow", self.workspace)
        from runner.tracking import open_tracker

        return open_tracker(workspace_tracking_uri(self.workspace), self.experiment, self.artifact_location)

    def run_dir(self, run_hash: str) -> Path:
        return self.workspace / "runs" / run_hash





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
        return ResultStore(url, read_only=read_only)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise store_error(option, url, exc, "not a database URL",
                          "; expected e.g. sqlite:////abs/path/ablate.db or postgresql+psycopg2://user@host/dbname") from None
    except (ImportError, OperationalError) as exc:
        raise store_error(option, url, exc) from None



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


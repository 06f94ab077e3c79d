"""The MLflow tracker: one MLflow experiment per study file and profile, one run per trained config,
and one run (tagged ``ablate.kind=report``) that holds the latest report.

Everything ablate does against an MLflow store outside a run's own writes is here: making the store
and the experiment ready (:meth:`MLflowTracker.prepare`), creating or reopening a trial's run,
finding the runs a dead attempt left, ending them, and logging the report. A trial's run is an
:class:`runner.tracking.mlflow_run.MLflowRun` (written from a background thread).

mlflow is imported only inside methods: importing this module costs nothing (``ablate --help``).
A store that cannot be reached or opened while it is prepared, or while the report is logged, is
bad input (exit 2) naming ``--tracking-uri``; every other MLflow failure after its retries is a
:class:`TrackingError` whose ``__cause__`` is MLflow's error.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, TypeVar

from ablations.errors import InputError
from runner.locks import database_lock
from runner.sqlite_files import check_store_file
from runner.tracking.base import TERMINAL_STATUSES, TrackingError
from runner.tracking.mlflow_files import mlflow_sqlite_uri, prepare_mlflow_file, sqlite_file
from runner.tracking.mlflow_run import _MAX_PARAMS_TAGS_PER_BATCH, _MAX_TAG_VAL_LENGTH, MLflowRun, retry_call
from runner.urls import store_error

logger = logging.getLogger(__name__)

REPORT_TAG = ("ablate.kind", "report")
T = TypeVar("T")


def is_tracking_server(uri: str) -> bool:
    """Is `uri` an MLflow tracking server (http/https) rather than a store opened directly?"""
    return uri.split(":", 1)[0].lower() in ("http", "https")


class MLflowTracker:
    """The MLflow experiment ``experiment`` in the store at ``uri``.

    ``uri``: a tracking server (``http(s)://``), a database (``postgresql://``), or an SQLite file
    (given in any form SQLAlchemy reads; MLflow gets :func:`mlflow_sqlite_uri`'s). ``artifact_location``:
    where a new experiment keeps its artifacts; ignored for a tracking server, so that artifacts go
    through it (its proxied artifact store) and its UI shows them from any host; for an SQLite store
    it defaults to ``mlartifacts/`` beside the file. The other options are each run's writer's
    (:class:`MLflowRun`). Constructing one touches nothing; a tracker may be shared by the threads of
    one process.
    """

    def __init__(self, uri: str, experiment: str, artifact_location: Optional[str] = None, *,
                 flush_interval_s: float = 2.0, max_batch: int = 1000, retries: int = 4,
                 retry_backoff_s: float = 0.1) -> None:
        self.file = sqlite_file(uri)
        self.uri = mlflow_sqlite_uri(self.file) if self.file is not None else uri
        self.experiment = experiment
        if is_tracking_server(uri):
            artifact_location = None
        elif artifact_location is None and self.file is not None:
            artifact_location = (self.file.parent / "mlartifacts").as_uri()
        self.artifact_location = artifact_location
        self._retries, self._backoff_s = retries, retry_backoff_s
        self._run_options = dict(flush_interval_s=flush_interval_s, max_batch=max_batch, retries=retries,
                                 retry_backoff_s=retry_backoff_s)
        self._client = None

    def __repr__(self) -> str:
        return f"MLflowTracker({self.uri!r}, {self.experiment!r})"

    @property
    def client(self):
        """The tracker's own ``MlflowClient`` (each run has another), made on first use."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    # ------------------------------------------------------------------ before the workers

    def prepare(self) -> None:
        """Make the store and the experiment ready, before any worker starts; doing it twice is
        harmless. The caller holds the workspace's ``.prepare.lock`` (one machine); on PostgreSQL
        the database's advisory lock is held here as well (machines starting together).

        MLflow builds a new store by running its schema migrations on first use, and those are not
        safe from several processes at once (8 workers on a new workspace died with "table ...
        already exists"), nor from a kill (each migration commits on its own): an SQLite store is
        built in a temporary file and renamed into place (:func:`prepare_mlflow_file`). A store that
        cannot be reached or opened is an :class:`InputError` naming ``--tracking-uri``."""
        try:
            with database_lock(self.uri):
                if self.file is not None:
                    prepare_mlflow_file(self.file, self.artifact_location, self.file.parent)
                ensure_experiment(self.client, self.experiment, self.artifact_location)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable server, bad URI, no driver: bad input
            raise store_error("--tracking-uri", self.uri, exc, "cannot reach the MLflow tracking store") from None

    def connect(self) -> None:
        """Import mlflow and open the store now (seconds with many workers starting on few cores),
        so that a worker does it before claiming a trial rather than on the trial's lease."""
        self._guard(lambda: self._call(lambda: self.client.get_experiment_by_name(self.experiment),
                                       "get experiment"), "connect")

    # ------------------------------------------------------------------ a trial's run

    def open_run(self, *, run_id: Optional[str], name: str, tags: dict, params: dict,
                 may_write: Optional[Callable[[], bool]] = None) -> MLflowRun:
        """Create a run named ``name``, or reopen ``run_id`` (a resumed trial): restored if it was
        deleted, RUNNING again, ``tags`` set, earlier metrics kept, and points at or before a
        metric's last logged step dropped from now on. A ``run_id`` the store does not know (the
        store was reset) gets a new run: the caller keeps the returned run's id.

        ``params`` are logged once (stringified, truncated to MLflow's limit); a param the run
        already has keeps its value, with a warning (MLflow forbids changing one)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)  # the run's own: its writer thread uses it
        tags = {str(k): str(v)[:_MAX_TAG_VAL_LENGTH] for k, v in tags.items()}

        def open_it() -> MLflowRun:
            experiment_id = self._call(lambda: ensure_experiment(client, self.experiment, self.artifact_location),
                                       "get/create experiment")
            run = self._reopen(client, run_id, tags) if run_id is not None else None
            if run is None:
                run = self._call(lambda: client.create_run(experiment_id, run_name=name, tags=tags), "create_run")
                logged, existing = {}, {}
            else:
                logged, existing = self._call(lambda: _logged_steps(client, run), "read logged steps"), run.data.params
            _log_params(client, run.info.run_id, params, existing, self._call)
            return MLflowRun(client, run.info.run_id, logged=logged, may_write=may_write, **self._run_options)

        return self._guard(open_it, f"open run {run_id or name}")

    def _reopen(self, client, run_id: str, tags: dict):
        try:
            run = self._call(lambda: client.get_run(run_id), "get_run")
        except Exception as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            logger.warning("MLflow run %s no longer exists in %s; the trial gets a new run", run_id, self.uri)
            return None
        if run.info.lifecycle_stage == "deleted":
            self._call(lambda: client.restore_run(run_id), "restore_run")
        self._call(lambda: client.update_run(run_id, status="RUNNING"), "reopen run")
        _log_tags(client, run_id, tags, self._call)
        return run

    # ------------------------------------------------------------------ crash recovery

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        """``(run_id, status)`` of the experiment's runs tagged ``tag=value``, oldest first (by
        start time); deleted runs are not included."""
        if "`" in tag or ("'" in value and '"' in value):
            raise ValueError(f"cannot search MLflow for tag {tag!r} = {value!r} (quotes of both kinds)")
        quote = '"' if "'" in value else "'"
        query = f"tags.`{tag}` = {quote}{value}{quote}"

        def search() -> list[tuple[str, str]]:
            experiment = self._call(lambda: self.client.get_experiment_by_name(self.experiment), "get experiment")
            if experiment is None:
                return []
            found, token = [], None
            while True:
                page = self._call(lambda: self.client.search_runs(
                    [experiment.experiment_id], query, order_by=["attributes.start_time ASC"], max_results=1000,
                    page_token=token), "search_runs")
                found += [(r.info.run_id, r.info.status) for r in page]
                token = page.token
                if not token:
                    return found

        return self._guard(search, f"find runs tagged {tag}={value}")

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        """Set ``run_id`` to ``status`` if it is still RUNNING (or SCHEDULED): True. False when it
        was already terminal or does not exist (an attempt that died before creating it)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        run = self._run_or_none(run_id)
        if run is None or run.info.status not in ("RUNNING", "SCHEDULED"):
            return False
        self._guard(lambda: self._call(lambda: self.client.set_terminated(run_id, status), "set_terminated"),
                    f"end run {run_id}")
        return True

    def last_step(self, run_id: str, metric: str) -> Optional[int]:
        """The highest step of ``metric`` in ``run_id``; None when it has none or no such run."""
        if self._run_or_none(run_id) is None:
            return None
        history = self._guard(lambda: self._call(lambda: self.client.get_metric_history(run_id, metric),
                                                 "get_metric_history"), f"read {metric} of run {run_id}")
        return max((m.step for m in history), default=None)

    def _run_or_none(self, run_id: str):
        def get():
            try:
                return self._call(lambda: self.client.get_run(run_id), "get_run")
            except Exception as exc:
                if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

        return self._guard(get, f"read run {run_id}")

    # ------------------------------------------------------------------ the report

    def log_report(self, report_dir: Path) -> str:
        """Log every file under ``report_dir`` (hidden ones aside: the temporary files of atomic
        writes) as artifacts of the experiment's report run, at the same relative paths; the run
        tagged ``ablate.kind=report`` is reused (files of the same name replaced), else created.
        Returns its id; "" for an SQLite store that does not exist yet: a read command makes none.
        A store that cannot be used is an :class:`InputError` naming ``--tracking-uri``."""
        report_dir = Path(report_dir)
        if self.file is not None and check_store_file(self.file, "mlflow", self.file.parent) == "new":
            return ""
        client = self.client
        try:
            experiment_id = ensure_experiment(client, self.experiment, self.artifact_location)
            found = self.find_runs(*REPORT_TAG)
            if found:
                run_id = found[0][0]
                client.update_run(run_id, status="RUNNING")
            else:
                run_id = client.create_run(experiment_id, run_name="report", tags=dict([REPORT_TAG])).info.run_id
            for path in sorted(report_dir.rglob("*")):
                relative = path.relative_to(report_dir)
                if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                    parent = relative.parent.as_posix()
                    client.log_artifact(run_id, str(path), None if parent == "." else parent)
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:  # noqa: BLE001 - bad input: the report is on disk, say why MLflow has none
            cause = exc.__cause__ if isinstance(exc, TrackingError) and exc.__cause__ else exc
            raise store_error("--tracking-uri", self.uri, cause,
                              "cannot log the report to the MLflow tracking store") from None
        return run_id

    # ------------------------------------------------------------------ helpers

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retry_call(fn, what, self._retries, self._backoff_s)

    def _guard(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, MLflow's failure (after the retries inside ``fn``) raised as TrackingError."""
        try:
            return fn()
        except (TrackingError, InputError):
            raise
        except Exception as exc:
            raise TrackingError(f"MLflow {self.uri}: {what} failed: {exc}") from exc


def _logged_steps(client, run) -> dict[str, int]:
    """The last step of every metric key the run holds (one history read per key, on reopen)."""
    run_id = run.info.run_id
    return {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
            for key in run.data.metrics}


def _max_param_val_length() -> int:
    """MLflow 3.x allows 6,000-character param values, older servers 500."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except Exception:  # pragma: no cover - very old or very new mlflow
        return 500


def _log_params(client, run_id: str, params: dict, existing: dict, call) -> None:
    from mlflow.entities import Param

    limit = _max_param_val_length()
    new: list[Param] = []
    for key, value in params.items():
        key, text = str(key), str(value)
        if len(text) > limit:
            logger.warning("param %s: value of %d chars truncated to %d", key, len(text), limit)
            text = text[:limit]
        if key in existing:
            if existing[key] != text:
                logger.warning("run %s: param %s already logged as %r, not changed to %r",
                               run_id, key, existing[key], text)
            continue
        new.append(Param(key, text))
    for i in range(0, len(new), _MAX_PARAMS_TAGS_PER_BATCH):
        chunk = new[i:i + _MAX_PARAMS_TAGS_PER_BATCH]
        call(lambda: client.log_batch(run_id, params=chunk, synchronous=True), "log params")


def _log_tags(client, run_id: str, tags: dict, call) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), _MAX_PARAMS_TAGS_PER_BATCH):
        chunk = items[i:i + _MAX_PARAMS_TAGS_PER_BATCH]
        call(lambda: client.log_batch(run_id, tags=chunk, synchronous=True), "set tags")


_warned_local_artifacts: set[tuple[str, str]] = set()


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The id of MLflow experiment `name`, made ready for new runs; the one place ablate creates
    an experiment (:meth:`MLflowTracker.prepare`, a run being opened, the report run).

    Created at `artifact_location` when missing (a plain path is resolved to an absolute one; a
    URI such as ``file:///...`` is kept as given; None lets the tracking server choose). A
    concurrent create by another worker or machine is tolerated (the experiment it made is used),
    and an experiment deleted in the UI is restored rather than failing every run. An existing
    experiment keeps its location (MLflow cannot move it): one on a local path behind a tracking
    server is used as it is, with a warning."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        if artifact_location and "://" not in artifact_location:
            artifact_location = str(Path(artifact_location).expanduser().resolve())
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another worker or `ablate run` created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        logger.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    _warn_local_artifacts(client, exp)
    return exp.experiment_id


def _warn_local_artifacts(client, exp) -> None:
    """Once per process and experiment: an experiment made before its artifacts went through the
    tracking server (file:// location) still has its runs write artifacts to that path on the
    machine that logs them, and the server's UI shows them only where it can read that path."""
    uri, location = getattr(client, "tracking_uri", "") or "", exp.artifact_location or ""
    if not is_tracking_server(uri) or not (location.startswith("file:") or location.startswith("/")):
        return
    if (uri, exp.name) in _warned_local_artifacts:
        return
    _warned_local_artifacts.add((uri, exp.name))
    logger.warning("MLflow experiment %r keeps its artifacts at %s, not on the tracking server %s: "
                   "sample images and reports are written there and the server's UI shows them only "
                   "if it can read that path; rename the experiment (mlflow experiments rename) so the "
                   "next run creates one whose artifacts go through the server", exp.name, location, uri)

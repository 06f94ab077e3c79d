"""The ``ablate`` command line. Thin: parse, call one function, map errors to exit codes.

Heavy libraries (torch, mlflow, optuna, pandas) are imported inside the commands, so that
``ablate --help`` answers in a fraction of a second.

Exit codes (SPEC §6): 0 done; 1 some trials failed (the others ran and were stored); 2 bad input
(study file, CLI arguments, data set) with a message naming the file, key or line.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from runner.tasks.mtl.data.cli import data_app

# rich_markup_mode=None: plain click help. typer's rich help imports rich.markdown and
# markdown_it (~0.15 s idle, over 1 s on a loaded machine), which alone broke the 0.5 s budget
# of `ablate --help`.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Run a report's chain of ablation studies, track them, and write the report.")
app.add_typer(data_app, name="data", help="Data set utilities (synthetic Miniscapes).")

StudyFile = typer.Argument(..., exists=False, help="The study file (e.g. studies.yaml).")
ProfileOpt = typer.Option(None, "--profile", "-p", help="Profile of the study file (default: its default_profile).")
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace directory (default: the study file's, else ./ablate-runs).")
# The store URLs also come from the environment (ABLATE_DB, ...), so that a password in one
# never has to be on a command line (`ps`, shell history, Slurm's job records).
DbOpt = typer.Option(None, "--db", envvar="ABLATE_DB",
                     help="SQLAlchemy URL of the result database (default: SQLite in the workspace).")
TrackingOpt = typer.Option(None, "--tracking-uri", envvar="ABLATE_TRACKING_URI",
                           help="MLflow tracking URI (default: sqlite:///<workspace>/mlflow.db); with an "
                                "http(s) server, artifacts go through the server.")


def _fail(message: str, code: int) -> None:
    """Print ``message`` and exit with ``code``. Called from :func:`main`, outside click's
    standalone handling, so it must raise SystemExit (a ``typer.Exit`` raised here is an
    ordinary exception: traceback and exit code 1)."""
    typer.secho(f"ablate: {message}", fg=typer.colors.RED, err=True)
    raise SystemExit(code)


def _session(study_file: Path, profile: Optional[str], workspace: Optional[Path], db: Optional[str] = None,
             tracking_uri: Optional[str] = None, optuna_storage: Optional[str] = None, read_only: bool = True):
    """The study file opened against its workspace; only ``run`` passes ``read_only=False``: the
    other commands create no workspace or database and write no result."""
    from runner.orchestrate.session import Session

    return Session.open(study_file, profile=profile, workspace=workspace, db_url=db, tracking_uri=tracking_uri,
                        optuna_storage=optuna_storage, read_only=read_only)


@app.command()
def run(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
        workspace: Optional[Path] = WorkspaceOpt,
        study: Optional[List[str]] = typer.Option(None, "--study", "-s", help="Only these studies (and what they need)."),
        workers: Optional[int] = typer.Option(None, "--workers", help="CPU worker processes (default 1 without GPUs)."),
        gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, e.g. 0,1 (default: every visible GPU)."),
        trials_per_gpu: int = typer.Option(1, "--trials-per-gpu", help="Concurrent trials per GPU."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed trials again."),
        db: Optional[str] = DbOpt, tracking_uri: Optional[str] = TrackingOpt,
        optuna_storage: Optional[str] = typer.Option(None, "--optuna-storage", envvar="ABLATE_OPTUNA_STORAGE",
                                                     help="Optuna storage URL (default: SQLite in the workspace)."),
        lease: float = typer.Option(120.0, "--lease", min=5.0, help="Seconds a silent worker keeps a trial."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display."),
        ) -> None:
    """Run every pending trial of the study file; finished trials are skipped, interrupted ones resumed."""
    from runner.orchestrate.scheduler import check_worker_counts, run_plan

    check_worker_counts(workers, trials_per_gpu)  # before the workspace is opened: nothing written
    session = _session(study_file, profile, workspace, db, tracking_uri, optuna_storage, read_only=False)
    outcome = run_plan(session, only=study or None, workers=workers, gpus=gpus,
                       trials_per_gpu=trials_per_gpu, retry_failed=retry_failed,
                       lease_s=lease, show_progress=progress)
    from ablations.errors import InputError
    from runner.views import print_status

    print_status(session, states=outcome.states)
    for line in outcome.stops:
        typer.echo(f"ablate: {line}", err=True)
    if outcome.error is not None:
        raise InputError(outcome.error)
    raise typer.Exit(outcome.exit_code)


@app.command()
def status(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
           workspace: Optional[Path] = WorkspaceOpt, db: Optional[str] = DbOpt) -> None:
    """Per study: done / running / failed / pending trials, failure reasons and the winner."""
    from runner.views import print_status

    print_status(_session(study_file, profile, workspace, db))


@app.command()
def inspect(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
            workspace: Optional[Path] = WorkspaceOpt, db: Optional[str] = DbOpt,
            params: bool = typer.Option(True, "--params/--no-params", help="Build each model to count parameters.")) -> None:
    """Every trial's resolved config as a diff against its study's base, with #params. Trains nothing."""
    from runner.views import print_inspect

    print_inspect(_session(study_file, profile, workspace, db), count_params=params)


@app.command()
def results(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
            workspace: Optional[Path] = WorkspaceOpt, db: Optional[str] = DbOpt,
            format: str = typer.Option("markdown", "--format", "-f", help="csv | json | markdown"),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout.")) -> None:
    """Every trial with its metrics, as a table (pandas)."""
    from ablations.errors import InputError, writing
    from runner.views import export_results

    if format not in ("csv", "json", "markdown"):
        raise InputError(f"--format: expected csv, json or markdown, got {format!r}")
    text = export_results(_session(study_file, profile, workspace, db), format)
    if output is None:
        sys.stdout.write(text)
    else:
        from runner.atomic import write_text_atomic

        with writing("--output", output):
            write_text_atomic(output, text)
        typer.echo(str(output))


@app.command()
def report(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
           workspace: Optional[Path] = WorkspaceOpt, db: Optional[str] = DbOpt,
           tracking_uri: Optional[str] = TrackingOpt,
           format: str = typer.Option("md", "--format", "-f", help="md | html"),
           log: bool = typer.Option(True, "--log/--no-log", help="Also log the report to the tracker (MLflow).")) -> None:
    """Write <workspace>/report/report.md with the report's tables, statistics and figures."""
    from ablations.errors import InputError, writing
    from runner.views import write_report

    if format not in ("md", "html"):
        raise InputError(f"--format: expected md or html, got {format!r}")
    session = _session(study_file, profile, workspace, db, tracking_uri)
    with writing("--workspace" if workspace else "workspace", session.workspace, inside=True):
        path = write_report(session, fmt=format, log=log)
    typer.echo(str(path))


@app.command()
def gc(study_file: Path = StudyFile, profile: Optional[str] = ProfileOpt,
       workspace: Optional[Path] = WorkspaceOpt, db: Optional[str] = DbOpt,
       dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be freed; change nothing.")) -> None:
    """Apply the study file's checkpoints: policy to every finished run of the workspace and print what it freed."""
    from runner.orchestrate.retention import collect_garbage

    report = collect_garbage(_session(study_file, profile, workspace, db), dry_run=dry_run)
    typer.echo("\n".join(report.lines(dry_run)))


@app.command()
def ui(study_file: Optional[Path] = typer.Argument(None, help="Study file (to find its workspace)."),
       workspace: Optional[Path] = WorkspaceOpt,
       host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (default: loopback only)."),
       port: int = typer.Option(5000, "--port"),
       optuna: bool = typer.Option(False, "--optuna", help="Serve optuna-dashboard instead of the MLflow UI.")) -> None:
    """Serve the MLflow UI (or optuna-dashboard) for the workspace, on 127.0.0.1 by default."""
    from runner.tracking.ui import serve

    if workspace is None and study_file is not None:
        from ablations import load_study_file
        from runner.orchestrate.session import workspace_path

        workspace = workspace_path(study_file, load_study_file(study_file), None)
    raise typer.Exit(serve(workspace or Path("ablate-runs"), host=host, port=port, optuna=optuna))


@app.command()
def train(config_file: Path = typer.Argument(..., help="A YAML file of the task's config keys."),
          workspace: Path = typer.Option(Path("ablate-runs"), "--workspace", "-w"),
          task: Optional[str] = typer.Option(None, "--task", help="The task (default mtl, or module[:object] beside the config file)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key: --set lr=0.001")) -> None:
    """Train one configuration in the workspace (resuming its checkpoint) and print its final metrics."""
    from ablations.errors import writing
    from runner.orchestrate.single import train_config_file

    with writing("--workspace", workspace, inside=True):
        result = train_config_file(config_file, workspace, overrides=set_ or [], task_name=task)
    metrics = "  ".join(f"{name} {value:.3f}" for name, value in result.final.items() if name in result.declared)
    params = f"params {result.params:,}  " if result.params is not None else ""
    typer.echo(f"{metrics}  {params}epochs {result.epochs}  steps {result.steps}  "
               f"time {result.wall_time_s:.1f}s  device {result.device}")


def _input_error(exc: BaseException) -> bool:
    """Is ``exc`` an :class:`ablations.errors.InputError`? Checked without importing
    ``ablations`` (pydantic: ~0.4 s): an InputError can only exist if its module was loaded."""
    errors = sys.modules.get("ablations.errors")
    return errors is not None and isinstance(exc, errors.InputError)


def main() -> None:
    # MLflow logs "Creating initial MLflow database tables..." at INFO into every first run's
    # output; ablate reports progress itself. Set MLFLOW_LOGGING_LEVEL=INFO to see MLflow's lines.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow reads the variable once, when imported: where it was imported before (a notebook, a
    # test process), its logger is set here too.
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    # A tracking server that is down or refuses (a wrong --tracking-uri) answered only after
    # MLflow's own retries: 7 with a backoff factor of 2, 254 s of silence before the exit-2 line.
    # Bounded to a few seconds here (ablate's background writes retry on their own, see
    # runner/tracking.py); set these variables to choose other values.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        app()
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - only InputError is handled; the rest re-raised
        if not _input_error(exc):
            raise
        _fail(str(exc), exc.exit_code)


if __name__ == "__main__":
    main()

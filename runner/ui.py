"""``ablate ui``: the MLflow UI (or optuna-dashboard) over a workspace's stores.

Listens on 127.0.0.1 unless ``--host`` says otherwise: experiment data should not be exposed on a
shared machine by default.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ablations.errors import InputError
from runner.store import sqlite_url


def ui_command(workspace: Path, *, host: str, port: int, optuna: bool) -> list[str]:
    if optuna:
        exe = shutil.which("optuna-dashboard")
        if exe is None:
            raise InputError("optuna-dashboard is not installed: pip install 'ablate[dashboard]'")
        storage = workspace / "optuna.db"
        if not storage.is_file():  # optuna-dashboard would create an empty file and crash on it
            raise InputError(f"{storage}: no Optuna storage in this workspace. Only search studies use "
                             "Optuna: run one first (e.g. `ablate run studies.yaml --profile search-demo`)")
        return [exe, sqlite_url(storage), "--host", host, "--port", str(port)]
    from runner.sqlite_files import mlflow_sqlite_uri

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", mlflow_sqlite_uri(workspace / "mlflow.db"),
            "--default-artifact-root", (workspace / "mlartifacts").as_uri(), "--host", host, "--port", str(port)]


def resolve_workspace(study_file: Optional[Path], workspace: Optional[Path]) -> Path:
    if workspace is None and study_file is not None:
        from ablations import load_study_file
        from runner.session import workspace_path

        workspace = workspace_path(study_file, load_study_file(study_file), None)
    ws = Path(workspace or "ablate-runs").expanduser().resolve()
    if not ws.is_dir():
        raise InputError(f"{ws}: workspace not found (run `ablate run` first or pass --workspace)")
    return ws


def serve(study_file: Optional[Path], workspace: Optional[Path], *, host: str, port: int, optuna: bool) -> int:
    ws = resolve_workspace(study_file, workspace)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this machine can read the runs", file=sys.stderr)
    command = ui_command(ws, host=host, port=port, optuna=optuna)
    print(f"serving {ws} on http://{host}:{port}  ({' '.join(command[:3])} ...)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0

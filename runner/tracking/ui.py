"""``ablate ui``: the MLflow UI (or optuna-dashboard) over a workspace's stores.

Listens on 127.0.0.1 unless ``--host`` says otherwise: experiment data should not be exposed on a
shared machine by default.

The server is a process tree (``mlflow ui`` starts uvicorn and job consumers), so it runs in a
process group of its own: stopping ``ablate ui`` (Ctrl-C, SIGTERM) stops the whole group, and
nothing keeps serving or holding the port after ``ablate ui`` has exited.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ablations.errors import InputError
from runner.sqlite_files import sqlite_url
from runner.tracking.mlflow_files import mlflow_sqlite_uri

STOP_GRACE_S = 10.0  # how long the server's group gets to exit on SIGTERM before SIGKILL


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

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", mlflow_sqlite_uri(workspace / "mlflow.db"),
            "--default-artifact-root", (workspace / "mlartifacts").as_uri(), "--host", host, "--port", str(port)]


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the server will: a port in use is bad input (exit 2) named by
    its option, not a server that logs EADDRINUSE and exits 0 after ablate said "serving".
    SO_REUSEADDR, like the servers: a port left in TIME_WAIT by an earlier server is free."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: expected a port number from 1 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: cannot listen there ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"--port {port}: {host}:{port} is already in use (another server?); "
                                 "pick a free port with --port") from None
            if exc.errno == errno.EACCES:
                raise InputError(f"--port {port}: not allowed to listen on it ({exc.strerror}); "
                                 "ports below 1024 need privileges") from None
            raise InputError(f"--host {host}: cannot listen there ({exc.strerror})") from None


def run_server(command: list[str]) -> int:
    """Run the server in a process group of its own until it exits or ablate is told to stop.

    On SIGINT or SIGTERM the whole group gets SIGTERM, then SIGKILL after STOP_GRACE_S; returns 0.
    A server that ends by itself failed (a server runs until stopped): its exit code, at least 1.
    Whatever the server left behind in its group is ended either way.
    """
    started: list[subprocess.Popen] = []
    deadline: list[float] = []  # set by the first SIGINT/SIGTERM: when the group gets SIGKILL

    def stop(_signum, _frame):
        deadline.append(time.monotonic() + STOP_GRACE_S)
        if started:
            _signal_group(started[0].pid, signal.SIGTERM)

    saved = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}  # before Popen
    try:
        started.append(subprocess.Popen(command, start_new_session=True))
        if deadline:  # a signal came while it was starting
            _signal_group(started[0].pid, signal.SIGTERM)
        while True:
            try:  # a bounded wait: after a signal, the loop must come round to the SIGKILL
                code = started[0].wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if deadline and time.monotonic() > deadline[0]:
                    _signal_group(started[0].pid, signal.SIGKILL)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        if started:  # job consumers and the like that outlived the server
            _signal_group(started[0].pid, signal.SIGKILL)
    if deadline:
        return 0
    print(f"ablate: the server stopped by itself (exit code {code}); see its output above",
          file=sys.stderr)
    return code if code > 0 else 1


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the group is empty: nothing left to stop
        pass


def serve(workspace: Path, *, host: str, port: int, optuna: bool) -> int:
    """Serve the stores of ``workspace`` (the caller found it from the study file or
    ``--workspace``) until stopped; the exit code of ``ablate ui``."""
    ws = Path(workspace).expanduser().resolve()
    if not ws.is_dir():
        raise InputError(f"{ws}: workspace not found (run `ablate run` first or pass --workspace)")
    command = ui_command(ws, host=host, port=port, optuna=optuna)
    check_port(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this machine can read the runs", file=sys.stderr)
    print(f"serving {ws} on http://{host}:{port}  ({' '.join(command[:3])} ...)", flush=True)
    return run_server(command)

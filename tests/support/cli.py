"""The one way tests run ``ablate``: in a subprocess (the real entry point: exit codes, signals,
tracebacks as a user sees them) or in this process (fast; the same ``runner.cli.main``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: this checkout importable, one thread per process,
    unbuffered output, and none of the developer's ABLATE_* store URLs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *map(str, args)]


def run_cli(*args, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``ablate ARGS`` in a subprocess; returns the completed process (text output)."""
    return subprocess.run(cli_cmd(*args), cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_cli(*args, cwd: Path, log: Path, env: dict | None = None,
              start_new_session: bool = False) -> subprocess.Popen:
    """``ablate ARGS`` started in a subprocess, stdout and stderr into ``log``.
    ``start_new_session``: in a session (and process group) of its own, as a daemon would be."""
    with open(log, "w") as handle:  # the child holds its own copy of the descriptor
        return subprocess.Popen(cli_cmd(*args), cwd=cwd, env=env or cli_env(), stdout=handle,
                                stderr=subprocess.STDOUT, text=True, start_new_session=start_new_session)


def invoke_cli(*args, capsys=None) -> tuple[int, str, str]:
    """``runner.cli.main`` with ``args`` in this process: (exit code, stdout, stderr). The SIGINT and
    SIGTERM handlers that ``ablate run`` installs are put back afterwards."""
    from runner.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_argv, sys.argv = sys.argv, ["ablate", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
        for s, handler in saved.items():
            signal.signal(s, handler)
    if capsys is None:
        return code, "", ""
    out = capsys.readouterr()
    return code, out.out, out.err

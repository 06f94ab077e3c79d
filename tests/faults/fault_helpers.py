"""Helpers of the fault tests: tiny study files, the CLI in a subprocess or in-process,
read-outs of the result store and of MLflow's database."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

# Modules a worker process needs, imported once in the fork server: every process it forks starts
# in milliseconds instead of importing torch and mlflow again (seconds each on 2 busy cores).
PRELOAD = ["runner.orchestrate.worker", "runner.orchestrate.scheduler", "runner.tasks.mtl.train", "runner.tracking.trial_log", "runner.tasks.mtl.assets",
           "runner.tasks.mtl.pretrain", "mlflow.tracking", "fault_fakes"]


def tiny_study(name: str, studies: str, **defaults) -> str:
    """A real (resnet18, synthetic 64x128) study file: a few seconds of CPU training per trial."""
    base = {"data_root": "synthetic", "synthetic_train": 8, "synthetic_val": 4, "synthetic_size": "[64, 128]",
            "crop_size": "[64, 128]", "encoder": "resnet18", "encoder_weights": "none", "head": "plain",
            "decoder": "none", "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "val_batch_size": 4,
            "device": "cpu"}
    base.update(defaults)
    lines = [f"name: {name}", "defaults:"] + [f"  {k}: {v}" for k, v in base.items()]
    return "\n".join(lines) + "\nstudies:\n" + studies


def cli_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *map(str, args)]


def run_cli(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``ablate ARGS`` in a subprocess (the real entry point, exit codes and all)."""
    return subprocess.run(cli_cmd(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_cli(*args, cwd: Path, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen(cli_cmd(*args), cwd=cwd, env=cli_env(), stdout=handle, stderr=subprocess.STDOUT,
                            text=True)


def main_inprocess(argv: list, capsys) -> tuple[int, str, str]:
    """``runner.cli.main`` with ``argv`` in this process: (exit code, stdout, stderr)."""
    from runner.cli import main

    old = sys.argv
    sys.argv = ["ablate", *map(str, argv)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def db_rows(workspace: Path, sql: str, args=()) -> list[dict]:
    db = sqlite3.connect(Path(workspace) / "ablate.db", timeout=60)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def runs_by_variant(workspace: Path) -> dict:
    """{(study, variant, seed): run row}."""
    rows = db_rows(workspace, "SELECT s.name AS study, t.variant, t.seed, r.* FROM trials t "
                              "JOIN studies s ON s.id = t.study_id JOIN runs r ON r.hash = t.run_hash")
    return {(r["study"], r["variant"], r["seed"]): r for r in rows}


def mlflow_status(workspace: Path, run_id: str) -> str:
    db = sqlite3.connect(Path(workspace) / "mlflow.db", timeout=60)
    try:
        row = db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        return row[0] if row else "missing"
    finally:
        db.close()


def mlflow_runs_of(workspace: Path, run_hash: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(Path(workspace) / "mlflow.db", timeout=60)
    try:
        return db.execute("SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                          "WHERE t.key = 'config_hash' AND t.value = ?", (run_hash,)).fetchall()
    finally:
        db.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except sqlite3.OperationalError:  # table not created yet / busy
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def step_rows(workspace: Path, run_hash: str) -> list[dict]:
    return db_rows(workspace, "SELECT step, wall_time_s, loss FROM step_losses WHERE run_hash = ? ORDER BY step",
                   (run_hash,))


def epoch_numbers(workspace: Path, run_hash: str) -> list[int]:
    return [r["epoch"] for r in db_rows(workspace, "SELECT epoch FROM epoch_metrics WHERE run_hash = ? "
                                                   "ORDER BY epoch", (run_hash,))]


def config_of(row: dict) -> dict:
    return json.loads(row["config_json"])


def ablate_messages(err: str) -> list[str]:
    """ablate's own lines on stderr (``ablate: ...``); MLflow may log its store creation there too."""
    return [line for line in err.splitlines() if line.startswith("ablate: ")]

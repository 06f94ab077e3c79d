"""How many worker processes one SQLite workspace takes: trials/s, failures, orphans.

    python bench/concurrency.py [--workers 16 32 64] [--trials 200] [--start-method spawn]

Each figure starts N worker processes (``runner.orchestrate.scheduler``'s worker entry point, as
``ablate run --workers N`` does) on a fresh workspace whose study file holds ~TRIALS trials of
bench/sleep_task.py in a two-study chain; that task sleeps ``--step-ms`` per step and logs every
step and epoch through the trial context as a real task does, so the numbers are ablate's own
bookkeeping: claims, leases, step/epoch rows, MLflow runs, all in SQLite (WAL). Printed per N:
wall time (process start to last exit), trials/s over the whole run and between first claim
and last finish, trials done/failed/left running, trials trained more than once, "database is
locked" errors (stored reasons and worker logs), done trials whose MLflow run is not one
FINISHED run with the recorded id, worker exit codes.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's runner, as in the other benches

import sleep_task  # noqa: E402 - beside this script: on sys.path here and in every worker process
from fleet import run_workers  # noqa: E402 - beside this script too

PRELOAD = ["optuna", "mlflow.tracking", "runner.orchestrate.scheduler", "runner.orchestrate.worker",
           "runner.orchestrate.trial", "runner.tracking.mlflow_tracker", "sleep_task", "fleet"]


def study_text(trials: int, log_dir: Path, step_s: float) -> str:
    """Two chained studies of about ``trials`` cells in all (distinct configs: no shared runs)."""
    half = max(trials // 2, 2)
    n1 = max(half // 10, 1)
    n2 = max((trials - n1 * 10) // 10, 1)
    first = {"lr": [round(0.001 * (i + 1), 6) for i in range(n1)],
             "momentum": [round(0.5 + 0.05 * j, 4) for j in range(10)]}
    second = {"lr": [round(0.0005 + 0.001 * i, 6) for i in range(n2)],
              "weight_decay": [round(1e-5 * (j + 1), 8) for j in range(10)]}
    defaults = {"epochs": 1, "steps_per_epoch": 2, "step_s": step_s, "log_dir": str(log_dir)}
    return (f"name: fleet\ntask: sleep_task\ndefaults: {json.dumps(defaults)}\nstudies:\n"
            f"  - name: first\n    grid: {json.dumps(first)}\n"
            f"  - name: second\n    start_from: previous\n    grid: {json.dumps(second)}\n")


def _rows(db_file: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(db_file, timeout=60)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def run_fleet(workdir: Path, *, workers: int, trials: int, step_s: float, lease_s: float, poll_s: float = 0.2,
              start_method: str = "spawn", timeout_s: float = 1800.0) -> dict:
    """Start ``workers`` processes on a fresh workspace over ~``trials`` trials; wait (killing
    whatever still runs after ``timeout_s``); count what the stores hold."""
    from runner.orchestrate.scheduler import prepare_workspace
    from runner.orchestrate.session import Session

    workspace, log_dir = workdir / "ws", workdir / "calls"
    log_dir.mkdir(parents=True)
    study = workdir / "fleet.yaml"
    study.write_text(study_text(trials, log_dir, step_s))
    session = Session.open(study, workspace=workspace)
    prepare_workspace(session)  # as ``ablate run`` does before it starts workers
    session.store.close()

    fleet = run_workers(study, workspace, workdir, workers=workers, lease_s=lease_s, poll_s=poll_s,
                        start_method=start_method, timeout_s=timeout_s)

    runs = _rows(workspace / "ablate.db", "SELECT hash, status, tracking_run_id, error FROM runs")
    by_status: dict = {}
    for _, status, _, _ in runs:
        by_status[status] = by_status.get(status, 0) + 1
    tracked: dict = {}
    for run_uuid, status, value in _rows(workspace / "mlflow.db",
                                         "SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t "
                                         "ON t.run_uuid = r.run_uuid WHERE t.key = 'config_hash'"):
        tracked.setdefault(value, []).append((run_uuid, status))
    first, last = _rows(workspace / "ablate.db", "SELECT MIN(started_at), MAX(finished_at) FROM runs")[0]
    done = by_status.get("done", 0)
    return {
        "cells": _rows(workspace / "ablate.db", "SELECT COUNT(*) FROM trials")[0][0],
        "by_status": by_status, "wall_s": fleet.wall_s, "trials_per_s": done / fleet.wall_s,
        "busy_per_s": done / (last - first) if first and last and last > first else 0.0,
        "twice": sum(1 for h, *_ in runs if sleep_task.calls(log_dir, h) > 1),
        "locked": sum(1 for *_, error in runs if error and "locked" in error.lower()) + fleet.log.lower().count("locked"),
        "mlflow_problems": sum(1 for h, status, run_id, _ in runs
                               if status == "done" and tracked.get(h) != [(run_id, "FINISHED")]),
        "exit_codes": fleet.exit_codes, "hung": fleet.hung,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=2.0)
    parser.add_argument("--lease", type=float, default=120.0)
    parser.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver"],
                        help="spawn: like `ablate run --workers N`; forkserver: preloaded, fast start")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.start_method == "forkserver":
        multiprocessing.set_forkserver_preload(PRELOAD)
    print(f"{'workers':>7} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'busy/s':>7} {'done':>5} {'failed':>6} "
          f"{'running':>7} {'twice':>5} {'locked':>6} {'mlflow':>6}  exit codes", flush=True)
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix=f"ablate-conc-{n}-") as tmp:
            r = run_fleet(Path(tmp), workers=n, trials=args.trials, step_s=args.step_ms / 1000,
                          lease_s=args.lease, start_method=args.start_method, timeout_s=args.timeout)
            codes = sorted(set(r["exit_codes"]), key=str)
            print(f"{n:>7} {r['cells']:>6} {r['wall_s']:>7.1f} {r['trials_per_s']:>8.2f} {r['busy_per_s']:>7.2f} "
                  f"{r['by_status'].get('done', 0):>5} {r['by_status'].get('failed', 0):>6} "
                  f"{r['by_status'].get('running', 0):>7} {r['twice']:>5} {r['locked']:>6} "
                  f"{r['mlflow_problems']:>6}  {codes}" + (f" hung: {len(r['hung'])}" if r["hung"] else ""), flush=True)


if __name__ == "__main__":
    main()

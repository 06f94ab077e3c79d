"""How many worker processes one SQLite workspace takes: trials/s, failures, orphans.

    python bench/concurrency.py [--workers 16 32 64] [--trials 200] [--start-method spawn]

Each figure starts N worker processes (``runner.orchestrate.scheduler``'s worker entry point, as
``ablate run --workers N`` does) on a fresh workspace whose study file holds ~TRIALS fake trials
in a two-study chain; the fake trainer (tests/faults/fault_fakes.py) sleeps ``--step-ms`` per
step and calls every hook of the real training loop, so the numbers are ablate's own
bookkeeping: claims, leases, step/epoch rows, MLflow runs, all in SQLite (WAL). Printed per N:
wall time (process start to last exit), trials/s over the whole run and between first claim
and last finish, trials done/failed/left running, trials trained more than once, "database is
locked" errors (stored reasons and worker logs), worker exit codes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "faults")]

from fault_fakes import mlflow_problems, run_fleet  # noqa: E402


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
        multiprocessing.set_forkserver_preload(["runner.orchestrate.worker", "runner.orchestrate.scheduler", "runner.tasks.mtl.train",
                                                "runner.tracking.trial_log", "mlflow.tracking", "fault_fakes"])
    print(f"{'workers':>7} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'busy/s':>7} {'done':>5} {'failed':>6} "
          f"{'running':>7} {'twice':>5} {'locked':>6} {'mlflow':>6}  exit codes", flush=True)
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix=f"ablate-conc-{n}-") as tmp:
            r = run_fleet(Path(tmp), workers=n, trials=args.trials, step_s=args.step_ms / 1000,
                          lease_s=args.lease, start_method=args.start_method, timeout_s=args.timeout)
            db = sqlite3.connect(Path(tmp) / "ws" / "ablate.db")
            first, last = db.execute("SELECT MIN(started_at), MAX(finished_at) FROM runs").fetchone()
            db.close()
            busy = r["by_status"].get("done", 0) / (last - first) if first and last and last > first else 0.0
            twice = sum(1 for c in r["calls"].values() if c > 1)
            codes = sorted(set(r["exit_codes"]), key=str)
            print(f"{n:>7} {r['cells']:>6} {r['wall_s']:>7.1f} {r['trials_per_s']:>8.2f} {busy:>7.2f} "
                  f"{r['by_status'].get('done', 0):>5} {r['by_status'].get('failed', 0):>6} "
                  f"{r['by_status'].get('running', 0):>7} {twice:>5} "
                  f"{len(r['locked']) + r['locked_in_logs']:>6} {len(mlflow_problems(r)):>6}  {codes}"
                  + (f" hung: {len(r['hung'])}" if r["hung"] else ""), flush=True)


if __name__ == "__main__":
    main()

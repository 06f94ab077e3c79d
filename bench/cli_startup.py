"""Benchmark: start-up of ``ablate --help`` against importing the heavy libraries it defers.

    python bench/cli_startup.py [--runs 7]

Each figure is a fresh interpreter, median over ``--runs``: ``process s`` is the whole process as
a shell sees it (interpreter start included), ``wall s`` and ``cpu s`` are timed inside it, from
before the first import to after the help text. The
target of issue #3 is ``ablate --help`` under 0.5 s; it holds because the CLI imports torch,
mlflow, optuna, pandas and pydantic only inside the commands that use them. The rows beside it
show what an eager import would cost, as ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TIMED = """
import sys, time
wall, cpu = time.perf_counter(), time.process_time()
{body}
print(time.perf_counter() - wall, time.process_time() - cpu)
"""

HELP = """
from runner.cli import main
sys.argv = ["ablate", "--help"]
out, sys.stdout = sys.stdout, open("/dev/null", "w")
try:
    main()
except SystemExit:
    pass
sys.stdout = out
"""

CASES = {
    "ablate --help": HELP,
    "import torch": "import torch",
    "import mlflow": "import mlflow",
    "import optuna": "import optuna",
    "import pandas": "import pandas",
    "torch+mlflow+optuna+pandas": "import torch, mlflow, optuna, pandas",
}


def measure(body: str, runs: int) -> tuple[float, float, float]:
    procs, walls, cpus = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", TIMED.format(body=body)], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.split()
        procs.append(time.perf_counter() - started)
        walls.append(float(out[-2]))
        cpus.append(float(out[-1]))
    return statistics.median(procs), statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="fresh interpreters per row (median reported)")
    args = ap.parse_args()
    results = {name: measure(body, args.runs) for name, body in CASES.items()}
    help_proc, help_wall, help_cpu = results["ablate --help"]
    print(f"python {sys.version.split()[0]}, median of {args.runs} fresh interpreters per row")
    print(f"{'':28s} {'process s':>10s} {'wall s':>8s} {'cpu s':>8s} {'process / ablate --help':>25s}")
    for name, (proc, wall, cpu) in results.items():
        print(f"{name:28s} {proc:10.3f} {wall:8.3f} {cpu:8.3f} {proc / help_proc:24.1f}x")
    verdict = "meets" if help_proc < 0.5 else "MISSES"
    print(f"\nablate --help: {help_proc:.3f} s for the whole process ({help_wall:.3f} s after interpreter "
          f"start, {help_cpu:.3f} s CPU): {verdict} the 0.5 s target")


if __name__ == "__main__":
    main()

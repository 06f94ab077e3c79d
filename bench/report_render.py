"""Benchmark: render the report of a 13-study chain with ~300 trials and per-epoch curves.

    python bench/report_render.py [--trials 300] [--epochs 16] [--jobs N] [--keep DIR]

Generates a result database with ResultStore (studies and trials through its API, runs and epoch
metrics with bulk inserts; no step losses: the report does not read them) in a temporary
directory, renders the report and prints the generation time and the first (cold) render time
split into imports / read / figures / markdown (target: < 5 s). Then renders it again with the
figures drawn serially (``jobs=1``) and in parallel (``--jobs``, default: up to 4 CPUs), checks the
output is byte-identical, and prints both times and their ratio.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, insert, update  # noqa: E402

from reports import RefNumbers, ReportPlan, ReportStudy, render_report  # noqa: E402
from runner.store import ResultStore, epoch_metrics, runs, sqlite_url  # noqa: E402

STUDIES = [("optimizer_lr", "Optimizer and LR", "1.1.1", 8), ("batch_size", "Batch size", "1.1.2", 3),
           ("task_weighting", "Task weighting", "1.1.3", 7), ("pretraining", "ImageNet pretraining", "1.2.1", 2),
           ("dilation", "Dilated convolutions", "1.2.2", 2), ("aspp_skip", "ASPP and skip", "1.3", 2),
           ("branched", "Branched architecture", "2", 2), ("distillation", "Task distillation", "3", 2),
           ("log_depth", "Log depth", "4.1", 2), ("upconv", "Up-convolution", "4.2", 2),
           ("skip2x", "Skip 2x", "4.3", 2), ("se_distill", "SE distillation", "4.4", 2),
           ("final_tuning", "Final tuning", "4.5", 3)]
STEPS_PER_RUN = 2000     # the ``step`` column of runs and epoch metrics (no step losses are written)


def build(db_url: str, n_trials: int, n_epochs: int, n_steps: int = STEPS_PER_RUN) -> ReportPlan:
    rng = random.Random(0)
    store = ResultStore(db_url)
    n_cells = sum(v for *_, v in STUDIES)
    n_seeds = max(1, round(n_trials / n_cells))
    specs, run_rows, epoch_rows = [], [], []
    prev, level = None, 40.0
    for pos, (name, title, section, n_var) in enumerate(STUDIES):
        seeds = list(range(1, n_seeds + 1))
        variants = [f"{name}_v{i}" for i in range(n_var)]
        sid = store.ensure_study(plan="bench", profile="full", name=name, position=pos,
                                 kind="variants", start_from=prev, pin=None, pin_reason=None,
                                 base_config={"study": name})
        report = {}
        for vi, variant in enumerate(variants):
            true = level + rng.uniform(-3, 3)
            report[variant] = RefNumbers(true, 50 + true / 2, 50 - true / 2, 26_000_000 + vi, "6:45")
            for seed in seeds:
                h = hashlib.sha1(f"{name}/{variant}/{seed}".encode()).hexdigest()[:32]
                store.add_trial(sid, variant, seed, config={"v": variant, "seed": seed},
                                config_hash=h, overrides={"variant_index": vi})
                grader = true + rng.gauss(0, 0.7)
                wall = 3600 * 6 + rng.uniform(-600, 600)
                run_rows.append(dict(h=h, status="done", final_grader=grader, final_iou=50 + grader / 2,
                                     final_si_logrmse=50 - grader / 2, params=26_000_000 + vi,
                                     wall_time_s=wall, mlflow_run_id="m" + h[:16],
                                     epochs_done=n_epochs, step=n_steps))
                for e in range(1, n_epochs + 1):
                    f = 1 - math.exp(-3 * e / n_epochs)
                    g = grader * f + rng.gauss(0, 0.3)
                    epoch_rows.append(dict(run_hash=h, epoch=e, step=e * n_steps // n_epochs,
                                           wall_time_s=wall * e / n_epochs, grader=g, iou=50 + g / 2,
                                           si_logrmse=50 - g / 2, loss=1 / e, lr=1e-4))
        specs.append(ReportStudy(name=name, title=title, section=section, start_from=prev,
                                 seeds=seeds, kind="variants", variants=variants,
                                 overrides={v: {"variant_index": i} for i, v in enumerate(variants)},
                                 report=report))
        prev, level = name, level + 2.5
    with store.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.hash == bindparam("h")).values(
            status=bindparam("status"), final_grader=bindparam("final_grader"),
            final_iou=bindparam("final_iou"), final_si_logrmse=bindparam("final_si_logrmse"),
            params=bindparam("params"), wall_time_s=bindparam("wall_time_s"),
            mlflow_run_id=bindparam("mlflow_run_id"), epochs_done=bindparam("epochs_done"),
            step=bindparam("step")), run_rows)
        conn.execute(insert(epoch_metrics), epoch_rows)
    store.close()
    return ReportPlan(name="bench", profile="full", studies=specs, file="bench.yaml")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _output(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _timed(store: ResultStore, plan: ReportPlan, out: Path, jobs: int | None) -> tuple[float, dict]:
    timings: dict = {}
    t0 = time.perf_counter()
    render_report(store, plan, out, jobs=jobs, timings=timings)
    return time.perf_counter() - t0, timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=None,
                    help="figure processes of the parallel render (default: up to 4 CPUs)")
    ap.add_argument("--keep", type=Path, help="render into this directory (kept)")
    args = ap.parse_args()
    jobs = args.jobs if args.jobs is not None else min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite_url(Path(tmp) / "ablate.db")
        t0 = time.perf_counter()
        plan = build(db, args.trials, args.epochs)
        gen = time.perf_counter() - t0
        store = ResultStore(db)
        out = args.keep or Path(tmp) / "report"
        cpu0 = _cpu()
        total, timings = _timed(store, plan, out, jobs)
        cpu = _cpu() - cpu0
        # warm renders (imports done): figures drawn here, in order, vs by `jobs` processes
        serial, t_serial = _timed(store, plan, out, 1)
        serial_bytes = _output(out)
        parallel, t_parallel = _timed(store, plan, out, jobs)
        same = _output(out) == serial_bytes
        store.close()
        n = sum(len(s.variants) * len(s.seeds) for s in plan.studies)
        print(f"generated {len(plan.studies)} studies, {n} trials/runs, {args.epochs} epochs each "
              f"in {gen:.2f} s")
        print(f"first render (jobs={jobs}): {total:.2f} s (imports {timings['setup']:.2f} s, read "
              f"{timings['read']:.2f} s, figures {timings['figures']:.2f} s, markdown "
              f"{timings['markdown']:.3f} s); CPU {cpu:.2f} s (this process + figure workers); "
              f"target < 5 s: {'ok' if total < 5 else 'SLOW'}")
        print(f"warm render, figures serial (jobs=1): {serial:.2f} s (figures "
              f"{t_serial['figures']:.2f} s)")
        print(f"warm render, figures parallel (jobs={jobs}): {parallel:.2f} s (figures "
              f"{t_parallel['figures']:.2f} s)")
        print(f"ratio serial/parallel: {serial / parallel:.2f}x total, "
              f"{t_serial['figures'] / t_parallel['figures']:.2f}x figures; "
              f"output byte-identical: {'yes' if same else 'NO'}"
              + ("" if jobs > 1 else " (jobs=1: both renders are serial)"))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: render the report of a 13-study chain with ~300 trials and per-step curves.

    python bench/report_render.py [--trials 300] [--epochs 16] [--steps 2000] [--keep DIR]

Generates a result database with ResultStore (studies and trials through its API, runs, epoch
metrics and step losses with bulk inserts) in a temporary directory, renders the report and prints
the generation time and the render time split into read / figures / markdown (target: < 5 s).
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
from runner.store import ResultStore, epoch_metrics, runs, sqlite_url, step_losses  # noqa: E402

STUDIES = [("optimizer_lr", "Optimizer and LR", "1.1.1", 8), ("batch_size", "Batch size", "1.1.2", 3),
           ("task_weighting", "Task weighting", "1.1.3", 7), ("pretraining", "ImageNet pretraining", "1.2.1", 2),
           ("dilation", "Dilated convolutions", "1.2.2", 2), ("aspp_skip", "ASPP and skip", "1.3", 2),
           ("branched", "Branched architecture", "2", 2), ("distillation", "Task distillation", "3", 2),
           ("log_depth", "Log depth", "4.1", 2), ("upconv", "Up-convolution", "4.2", 2),
           ("skip2x", "Skip 2x", "4.3", 2), ("se_distill", "SE distillation", "4.4", 2),
           ("final_tuning", "Final tuning", "4.5", 3)]


def build(db_url: str, n_trials: int, n_epochs: int, n_steps: int) -> ReportPlan:
    rng = random.Random(0)
    store = ResultStore(db_url)
    n_cells = sum(v for *_, v in STUDIES)
    n_seeds = max(1, round(n_trials / n_cells))
    specs, run_rows, epoch_rows, step_rows = [], [], [], []
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
                step_rows.extend(dict(run_hash=h, step=s, wall_time_s=wall * s / n_steps,
                                      loss=1 / s, loss_semseg=0.5 / s, loss_depth=0.5 / s)
                                 for s in range(1, n_steps + 1))
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
        conn.execute(insert(step_losses), step_rows)
    store.close()
    return ReportPlan(name="bench", profile="full", studies=specs, file="bench.yaml")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=None, help="figure processes (default: auto)")
    ap.add_argument("--keep", type=Path, help="render into this directory (kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite_url(Path(tmp) / "ablate.db")
        t0 = time.perf_counter()
        plan = build(db, args.trials, args.epochs, args.steps)
        gen = time.perf_counter() - t0
        store = ResultStore(db)
        out = args.keep or Path(tmp) / "report"
        timings: dict = {}
        cpu0 = _cpu()
        t0 = time.perf_counter()
        render_report(store, plan, out, jobs=args.jobs, timings=timings)
        total = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        t0 = time.perf_counter()
        render_report(store, plan, out, jobs=args.jobs)
        again = time.perf_counter() - t0
        store.close()
        n = sum(len(s.variants) * len(s.seeds) for s in plan.studies)
        print(f"generated {len(plan.studies)} studies, {n} trials/runs, {args.epochs} epochs and "
              f"{args.steps} step losses each in {gen:.2f} s")
        print(f"render: {total:.2f} s (imports {timings['setup']:.2f} s, read {timings['read']:.2f} s, figures "
              f"{timings['figures']:.2f} s, markdown {timings['markdown']:.3f} s); "
              f"CPU {cpu:.2f} s (this process + figure workers); second render {again:.2f} s; "
              f"target < 5 s: {'ok' if total < 5 else 'SLOW'}")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

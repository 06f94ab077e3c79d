"""Benchmark: render the report of a 13-study chain with ~300 trials and per-epoch curves.

    python bench/report_render.py [--trials 300] [--epochs 16] [--jobs N] [--keep DIR]

Builds a synthetic ``reports.ReportInput`` directly (no store: reading it is the caller's part),
with the built-in task's three metrics, renders the report and prints the generation time and the
first (cold) render time split into imports / figures / markdown (target: < 5 s). Then renders it
again with the figures drawn serially (``jobs=1``) and in parallel (``--jobs``, default: up to 4
CPUs), checks the output is byte-identical, and prints both times and their ratio.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from ablations.objective import Objective  # noqa: E402
from ablations.plan import StudySpec  # noqa: E402
from ablations.results import study_finished, summarise  # noqa: E402
from ablations.task import Task, load_task  # noqa: E402
from ablations.variants import Variant  # noqa: E402
from reports import MetricInfo, ReportInput, StudyReport, render_report  # noqa: E402

STUDIES = [("optimizer_lr", "Optimizer and LR", "1.1.1", 8), ("batch_size", "Batch size", "1.1.2", 3),
           ("task_weighting", "Task weighting", "1.1.3", 7), ("pretraining", "ImageNet pretraining", "1.2.1", 2),
           ("dilation", "Dilated convolutions", "1.2.2", 2), ("aspp_skip", "ASPP and skip", "1.3", 2),
           ("branched", "Branched architecture", "2", 2), ("distillation", "Task distillation", "3", 2),
           ("log_depth", "Log depth", "4.1", 2), ("upconv", "Up-convolution", "4.2", 2),
           ("skip2x", "Skip 2x", "4.3", 2), ("se_distill", "SE distillation", "4.4", 2),
           ("final_tuning", "Final tuning", "4.5", 3)]
STEPS_PER_RUN = 2000
# the report's network's metrics, as the built-in task declares them (names are data here)
SCORE, SEG, DEPTH = "grader", "iou", "si_logrmse"
METRICS = [MetricInfo(SCORE, "max", "Grader"), MetricInfo(SEG, "max", "SemSeg (IoU)"),
           MetricInfo(DEPTH, "min", "Depth (SI-logRMSE)")]
OBJECTIVE = Objective(SCORE, "max")


@dataclass(frozen=True)
class Cell:
    """The attributes of the store's CellRecord that summarise and the report read."""

    variant: str
    seed: int
    status: Optional[str]
    run_hash: Optional[str]
    metrics: dict = field(default_factory=dict)
    error: Optional[str] = None
    tracking_run_id: Optional[str] = None
    wall_time_s: Optional[float] = None
    params: Optional[int] = None
    overrides: Optional[dict] = None
    config: Optional[dict] = None


def _scores(score: float) -> dict:
    return {SCORE: score, SEG: 50 + score / 2, DEPTH: 50 - score / 2}


def build(task: Task, n_trials: int, n_epochs: int, n_steps: int = STEPS_PER_RUN) -> ReportInput:
    rng = random.Random(0)
    n_cells = sum(v for *_, v in STUDIES)
    n_seeds = max(1, round(n_trials / n_cells))
    studies, prev, level, wall_total = [], None, 40.0, 0.0
    for name, title, section, n_var in STUDIES:
        seeds = list(range(1, n_seeds + 1))
        variants = [f"{name}_v{i}" for i in range(n_var)]
        report, cells, epoch_rows = {}, [], []
        for vi, variant in enumerate(variants):
            true = level + rng.uniform(-3, 3)
            report[variant] = {**_scores(true), "params": 26_000_000 + vi, "time": "6:45"}
            for seed in seeds:
                h = hashlib.sha1(f"{name}/{variant}/{seed}".encode()).hexdigest()[:32]
                score = true + rng.gauss(0, 0.7)
                wall = 3600 * 6 + rng.uniform(-600, 600)
                wall_total += wall
                cells.append(Cell(variant, seed, "done", h, _scores(score), tracking_run_id="m" + h[:16],
                                  wall_time_s=wall, params=26_000_000 + vi,
                                  overrides={"variant_index": vi}))
                for e in range(1, n_epochs + 1):
                    f = 1 - math.exp(-3 * e / n_epochs)
                    epoch_rows.append(dict(run_hash=h, variant=variant, seed=seed, epoch=e,
                                           step=e * n_steps // n_epochs, wall_time_s=wall * e / n_epochs,
                                           **_scores(score * f + rng.gauss(0, 0.3))))
        spec = StudySpec(name=name, title=title, section=section, description="", start_from=prev,
                         pin=None, seeds=seeds, kind="variants",
                         variants=[Variant(v, {"variant_index": i}) for i, v in enumerate(variants)],
                         search=None, task=task, objective=OBJECTIVE, report=report)
        results = summarise(cells)
        curves = pd.DataFrame(epoch_rows).sort_values(["variant", "seed", "epoch"], kind="stable")
        studies.append(StudyReport(spec=spec, objective=OBJECTIVE, results=results,
                                   finished=study_finished(results),
                                   status_counts=dict(Counter(c.status for c in cells)), cells=cells,
                                   curves=curves.reset_index(drop=True)))
        prev, level = name, level + 2.5
    n = sum(len(s.cells) for s in studies)
    return ReportInput(name="bench", profile="full", file="bench.yaml", task="mtl", metrics=METRICS,
                       objective=OBJECTIVE, studies=studies, runs_total=n, runs_done=n,
                       wall_time_total_s=wall_total)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(data: ReportInput, jobs: int | None) -> tuple[float, dict, dict[str, bytes]]:
    timings: dict = {}
    t0 = time.perf_counter()
    files = render_report(data, jobs=jobs, timings=timings)
    return time.perf_counter() - t0, timings, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=None,
                    help="figure processes of the parallel render (default: up to 4 CPUs)")
    ap.add_argument("--keep", type=Path, help="write the rendered files into this directory")
    args = ap.parse_args()
    jobs = args.jobs if args.jobs is not None else min(4, os.cpu_count() or 1)
    task = load_task("mtl")  # the specs' task (loading it is not the report's cost)
    t0 = time.perf_counter()
    data = build(task, args.trials, args.epochs)
    gen = time.perf_counter() - t0
    cpu0 = _cpu()
    total, timings, files = _timed(data, jobs)
    cpu = _cpu() - cpu0
    # warm renders (imports done): figures drawn here, in order, vs by `jobs` processes
    serial, t_serial, serial_files = _timed(data, 1)
    parallel, t_parallel, parallel_files = _timed(data, jobs)
    same = serial_files == parallel_files == files
    if args.keep:
        for rel, content in files.items():
            (args.keep / rel).parent.mkdir(parents=True, exist_ok=True)
            (args.keep / rel).write_bytes(content)
    n = sum(len(s.cells) for s in data.studies)
    print(f"generated {len(data.studies)} studies, {n} trials/runs, {args.epochs} epochs each "
          f"in {gen:.2f} s (ReportInput in memory, no store)")
    print(f"first render (jobs={jobs}): {total:.2f} s (imports {timings['setup']:.2f} s, figures "
          f"{timings['figures']:.2f} s, markdown {timings['markdown']:.3f} s with scipy's first "
          f"import); CPU {cpu:.2f} s (this process + figure workers); target < 5 s: "
          f"{'ok' if total < 5 else 'SLOW'}")
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

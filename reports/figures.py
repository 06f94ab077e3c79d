"""Figures: per-study metric curves (against step and wall time) and the chain's waterfall.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), the default
style, a fixed size/dpi and no "Software" metadata: the same data gives byte-identical PNGs.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 80
STUDY_SIZE = (14.0, 7.0)
CHAIN_SIZE = (12.0, 5.5)
PNG_KW = {"format": "png", "dpi": DPI, "metadata": {"Software": None},
          "pil_kwargs": {"compress_level": 4}}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
LINESTYLES = ["-", "--", ":", "-."]
RC = {"xtick.labelsize": 8, "ytick.labelsize": 8, "axes.titlesize": 10, "axes.labelsize": 9,
      "axes.grid": True, "grid.alpha": 0.3,
      "axes.titley": 1.0}   # a fixed title position skips matplotlib's costly auto-placement
METRICS = [("grader", "Grader (higher is better)"), ("iou", "SemSeg IoU (higher is better)"),
           ("si_logrmse", "Depth SI-logRMSE (lower is better)")]


_IN_STYLE = False


@contextlib.contextmanager
def _style_context():
    """Matplotlib's default style (ignores a user's matplotlibrc); entered once per batch."""
    global _IN_STYLE
    if _IN_STYLE:
        yield
        return
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        _IN_STYLE = True
        try:
            yield
        finally:
            _IN_STYLE = False


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, **PNG_KW)
    return buf.getvalue()


def _style(i: int) -> tuple[str, str]:
    return PALETTE[i % len(PALETTE)], LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]


def aggregate_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean (and sample std) over seeds per (variant, epoch)."""
    spec = {"step": ("step", "mean"), "wall_time_s": ("wall_time_s", "mean"),
            "n": ("seed", "nunique")}
    for metric, _ in METRICS:
        spec[metric] = (metric, "mean")
        spec[metric + "_std"] = (metric, "std")
    return curves.groupby(["variant", "epoch"], sort=True).agg(**spec).reset_index()


def study_figure(curves: pd.DataFrame, order: Sequence[str], winner: Optional[str],
                 title: str, winner_label: str = "winner") -> Optional[bytes]:
    """A 2x3 grid: grader, IoU, SI-logRMSE against step (top) and wall time (bottom)."""
    if curves is None or curves.empty:
        return None
    agg = aggregate_curves(curves)
    present = set(agg["variant"])
    variants = [v for v in order if v in present] + sorted(present - set(order))
    max_wall = float(agg["wall_time_s"].max() or 0.0)
    unit, scale = ("h", 3600.0) if max_wall >= 2 * 3600 else ("min", 60.0)

    with _style_context():
        fig = Figure(figsize=STUDY_SIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 3, squeeze=False)
        handles, labels = [], []
        groups = {name: g for name, g in agg.groupby("variant", sort=True)}
        bands: dict[tuple[int, int], tuple[list, list]] = {}
        for i, variant in enumerate(variants):
            g = groups[variant]
            color, ls = _style(i)
            is_winner = variant == winner
            lw = 2.6 if is_winner else 1.3
            xs = (g["step"].to_numpy(dtype=float), g["wall_time_s"].to_numpy(dtype=float) / scale)
            with_band = bool((g["n"] > 1).any())
            for col, (metric, _) in enumerate(METRICS):
                mean = g[metric].to_numpy(dtype=float)
                std = g[metric + "_std"].to_numpy(dtype=float)
                for row in range(2):
                    ax = axes[row][col]
                    (line,) = ax.plot(xs[row], mean, color=color, linestyle=ls, linewidth=lw,
                                      marker="o" if len(mean) == 1 else None, markersize=3)
                    if with_band:
                        ok = ~np.isnan(std) & ~np.isnan(mean)
                        if ok.sum() >= 2:
                            x = xs[row][ok]
                            lo, hi = mean[ok] - std[ok], mean[ok] + std[ok]
                            verts = np.concatenate([np.column_stack([x, lo]),
                                                    np.column_stack([x[::-1], hi[::-1]])])
                            polys, colors = bands.setdefault((row, col), ([], []))
                            polys.append(verts)
                            colors.append(color)
                    if row == 0 and col == 0:
                        handles.append(line)
                        labels.append(f"{variant} ({winner_label})" if is_winner else variant)
        for (row, col), (polys, colors) in sorted(bands.items()):
            # one collection per panel: far cheaper than one fill_between per variant
            axes[row][col].add_collection(PolyCollection(polys, facecolors=colors, alpha=0.12,
                                                         linewidths=0), autolim=True)
            axes[row][col].autoscale_view()
        for col, (_, label) in enumerate(METRICS):
            for row in range(2):     # fewer ticks: tick objects are most of the drawing cost
                axes[row][col].xaxis.set_major_locator(MaxNLocator(5))
                axes[row][col].yaxis.set_major_locator(MaxNLocator(5))
            axes[0][col].set_title(label)
            axes[0][col].set_xlabel("step")
            axes[1][col].set_xlabel(f"wall time ({unit})")
        fig.suptitle(title + "  (mean over seeds, band: ±1 std)", fontsize=12)
        ncol = 1 if len(handles) <= 18 else 2
        fig.legend(handles, labels, loc="center right", fontsize=8, ncol=ncol, frameon=False)
        fig.subplots_adjust(left=0.05, right=0.80 if ncol == 1 else 0.70, top=0.90, bottom=0.08,
                            wspace=0.28, hspace=0.32)
        return _png(fig)


@dataclass(frozen=True)
class ChainStep:
    study: str
    winner: str
    grader: float
    base: Optional[float]          # the grader the gain is measured from (None: first study)
    report: Optional[float] = None  # the report's grader for this variant, if any


def chain_figure(steps: Sequence[ChainStep], title: str) -> Optional[bytes]:
    """Waterfall of the winners' mean grader along the chain, with the report's numbers."""
    if not steps:
        return None
    with _style_context():
        fig = Figure(figsize=CHAIN_SIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        xs = list(range(len(steps)))
        for x, s in zip(xs, steps):
            if s.base is None:
                bottom, height, color = 0.0, s.grader, "#7f7f7f"
            else:
                bottom, height = s.base, s.grader - s.base
                color = "#2ca02c" if height >= 0 else "#d62728"
            ax.bar(x, height, bottom=bottom, color=color, width=0.6, edgecolor="black", linewidth=0.5)
            ax.text(x, max(bottom, bottom + height) + 0.4, f"{s.grader:.1f}", ha="center",
                    va="bottom", fontsize=8)
        ax.step(xs, [s.grader for s in steps], where="mid", color="black", linewidth=1.0,
                label="winner's mean grader")
        rep = [(x, s.report) for x, s in zip(xs, steps) if s.report is not None]
        if rep:
            ax.plot([x for x, _ in rep], [r for _, r in rep], linestyle="none", marker="x",
                    color="#9467bd", markersize=8, label="report's grader (same variant)")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{s.study}\n{s.winner}" for s in steps], rotation=35, ha="right",
                           fontsize=7)
        ax.set_ylabel("grader")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(title, fontsize=11)
        top = max([s.grader for s in steps] + [r for _, r in rep])
        ax.set_ylim(0, top * 1.12 + 1)
        fig.subplots_adjust(left=0.06, right=0.98, top=0.92, bottom=0.24)
        return _png(fig)


MIN_PARALLEL_TASKS = 4   # below this, forking workers costs more than it saves


def render_many(tasks: Sequence[tuple[Callable[..., Optional[bytes]], tuple]], *,
                jobs: Optional[int] = None) -> list[Optional[bytes]]:
    """Run figure tasks ``(fn, args)``; results in task order (the same bytes either way).

    With ``jobs`` > 1 (default: up to 4 CPUs) and enough tasks, the figures are drawn in forked
    worker processes; fork is only used on Linux from a single-threaded process (no lock can be
    held by another thread at fork time), otherwise everything runs here, in order.
    """
    if jobs is None:
        jobs = min(4, os.cpu_count() or 1)
    jobs = min(jobs, len(tasks))
    if jobs > 1 and len(tasks) >= MIN_PARALLEL_TASKS and sys.platform.startswith("linux") \
            and threading.active_count() == 1:
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = [pool.submit(_run_task, fn, args) for fn, args in tasks]
                return [f.result() for f in futures]
        except (OSError, RuntimeError, ValueError):   # pragma: no cover - no fork here
            pass
    with _style_context():
        return [fn(*args) for fn, args in tasks]


def _run_task(fn: Callable[..., Optional[bytes]], args: tuple) -> Optional[bytes]:
    with _style_context():
        return fn(*args)

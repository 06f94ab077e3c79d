"""Figures: per-study metric curves (along epochs and wall time) and the chain's waterfall.

Every metric the task declares gets a column, the objective first: the mean over seeds with a
±1 std band, the winner drawn thick and on top. The chain shows the file objective's metric with
bars coloured by its goal, hatched where the significance gate kept the incumbent.

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

from .model import MetricInfo

DPI = 80
PANEL_WIDTH = 3.7        # inches per metric column
LEGEND_WIDTH = 2.8       # inches kept right of the panels for a one-column legend
STUDY_HEIGHT = 7.0
CHAIN_SIZE = (12.0, 5.5)
PNG_KW = {"format": "png", "dpi": DPI, "metadata": {"Software": None},
          "pil_kwargs": {"compress_level": 4}}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
LINESTYLES = ["-", "--", ":", "-."]
RC = {"xtick.labelsize": 8, "ytick.labelsize": 8, "axes.titlesize": 10, "axes.labelsize": 9,
      "axes.grid": True, "grid.alpha": 0.3,
      "axes.titley": 1.0}   # a fixed title position skips matplotlib's costly auto-placement
BETTER, WORSE, FIRST = "#2ca02c", "#d62728", "#7f7f7f"


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


def aggregate_curves(curves: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean (and sample std) of each of ``metrics`` over seeds per (variant, epoch)."""
    spec = {"step": ("step", "mean"), "wall_time_s": ("wall_time_s", "mean"),
            "n": ("seed", "nunique")}
    for metric in metrics:
        spec[metric] = (metric, "mean")
        spec[metric + "_std"] = (metric, "std")
    return curves.groupby(["variant", "epoch"], sort=True).agg(**spec).reset_index()


def study_figure(curves: pd.DataFrame, metrics: Sequence[MetricInfo], order: Sequence[str],
                 winner: Optional[str], title: str, winner_label: str = "winner") -> Optional[bytes]:
    """One column per metric (in the given order; those without a curve column are left out):
    along epochs (top) and wall time (bottom), mean over seeds with a ±1 std band."""
    if curves is None or curves.empty:
        return None
    metrics = [m for m in metrics if m.name in curves.columns]
    if not metrics:
        return None
    agg = aggregate_curves(curves, [m.name for m in metrics])
    present = set(agg["variant"])
    variants = [v for v in order if v in present] + sorted(present - set(order))
    max_wall = float(agg["wall_time_s"].max() or 0.0)
    unit, scale = ("h", 3600.0) if max_wall >= 2 * 3600 else ("min", 60.0)
    width = PANEL_WIDTH * len(metrics) + LEGEND_WIDTH

    with _style_context():
        fig = Figure(figsize=(width, STUDY_HEIGHT), dpi=DPI)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, len(metrics), squeeze=False)
        handles, labels = [], []
        groups = {name: g for name, g in agg.groupby("variant", sort=True)}
        bands: dict[tuple[int, int], tuple[list, list]] = {}
        for i, variant in enumerate(variants):
            g = groups[variant]
            color, ls = _style(i)
            is_winner = variant == winner
            lw = 2.6 if is_winner else 1.3
            xs = (g["epoch"].to_numpy(dtype=float), g["wall_time_s"].to_numpy(dtype=float) / scale)
            with_band = bool((g["n"] > 1).any())
            for col, metric in enumerate(metrics):
                mean = g[metric.name].to_numpy(dtype=float)
                std = g[metric.name + "_std"].to_numpy(dtype=float)
                for row in range(2):
                    ax = axes[row][col]
                    (line,) = ax.plot(xs[row], mean, color=color, linestyle=ls, linewidth=lw,
                                      marker="o" if len(mean) == 1 else None, markersize=3,
                                      zorder=3 if is_winner else 2)
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
        for col, metric in enumerate(metrics):
            for row in range(2):     # fewer ticks: tick objects are most of the drawing cost
                axes[row][col].xaxis.set_major_locator(MaxNLocator(5, integer=row == 0))
                axes[row][col].yaxis.set_major_locator(MaxNLocator(5))
            axes[0][col].set_title(f"{metric.label} ({metric.better})")
            axes[0][col].set_xlabel("epoch")
            axes[1][col].set_xlabel(f"wall time ({unit})")
        fig.suptitle(title + "  (mean over seeds, band: ±1 std)", fontsize=12)
        ncol = 1 if len(handles) <= 18 else 2
        fig.legend(handles, labels, loc="center right", fontsize=8, ncol=ncol, frameon=False)
        legend = LEGEND_WIDTH * (1 if ncol == 1 else 1.5)
        fig.subplots_adjust(left=0.05, right=1 - legend / width, top=0.90, bottom=0.08,
                            wspace=0.28, hspace=0.32)
        return _png(fig)


@dataclass(frozen=True)
class ChainStep:
    study: str
    winner: str
    value: float                   # the winner's mean objective
    base: Optional[float]          # the value the gain is measured from (None: first study)
    report: Optional[float] = None  # the report's value for this variant, if any
    kept: bool = False             # the significance gate kept the incumbent over a better mean


def step_color(goal: str, value: float, base: float) -> str:
    """Green when ``value`` improves on ``base`` for ``goal`` (or equals it), red otherwise."""
    better = value >= base if goal == "max" else value <= base
    return BETTER if better else WORSE


def _short(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def chain_figure(steps: Sequence[ChainStep], metric: MetricInfo, title: str) -> Optional[bytes]:
    """Waterfall of the winners' mean objective along the chain, with the report's values; a
    step is green when it improves on its base for the metric's goal, red when it worsens."""
    if not steps:
        return None
    with _style_context():
        fig = Figure(figsize=CHAIN_SIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        xs = list(range(len(steps)))
        rep = [(x, s.report) for x, s in zip(xs, steps) if s.report is not None]
        values = [0.0] + [s.value for s in steps] + [r for _, r in rep]
        low, high = min(values), max(values)
        pad = 0.06 * (high - low) or 1.0
        for x, s in zip(xs, steps):
            if s.base is None:
                bottom, height, color = 0.0, s.value, FIRST
            else:
                bottom, height = s.base, s.value - s.base
                color = step_color(metric.goal, s.value, s.base)
            ax.bar(x, height, bottom=bottom, color=color, width=0.6, edgecolor="black", linewidth=0.5,
                   hatch="//" if s.kept else None)
            ax.text(x, max(bottom, bottom + height) + pad / 3,
                    _short(s.value) + ("\nkept incumbent" if s.kept else ""), ha="center",
                    va="bottom", fontsize=8)
        ax.step(xs, [s.value for s in steps], where="mid", color="black", linewidth=1.0,
                label=f"winner's mean {metric.name}")
        if rep:
            ax.plot([x for x, _ in rep], [r for _, r in rep], linestyle="none", marker="x",
                    color="#9467bd", markersize=8, label=f"report's {metric.name} (same variant)")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{s.study}\n{s.winner}" + (" (kept)" if s.kept else "") for s in steps],
                           rotation=35, ha="right", fontsize=7)
        ax.set_ylabel(f"{metric.label} ({metric.better})")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_ylim(low - (pad if low < 0 else 0), high + 2 * pad)
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

"""The ablation report: markdown (and optionally HTML) plus PNG figures, from typed input.

``render_report(data)`` is a pure function: from a :class:`ReportInput` (the plan's studies with
their results, built by the caller from the store) to ``{relative path: bytes}`` —
``report.md``, ``figures/<study>.png``, ``figures/chain.png`` and ``report.html`` for
``fmt="html"``. It reads no file, clock or database and writes nothing: the caller writes the
files (atomically) and logs them to the tracker. The same input gives byte-identical output,
and a report can be rendered while studies still run ("leading" instead of "winner").
"""
from __future__ import annotations

import time
from typing import Optional

from .model import Cell, MetricInfo, PinInfo, ReportInput, StudyReport, report_number

__all__ = ["Cell", "MetricInfo", "PinInfo", "ReportInput", "StudyReport", "render_markdown",
           "render_report", "report_number"]

FIGURES_DIR = "figures"
CHAIN_FIGURE = "chain"
FORMATS = ("md", "html")


def render_markdown(data: ReportInput, figures: dict[str, str], chain_figure: Optional[str]) -> str:
    """The document: header, summary, one section per study in file order. ``figures``: study
    name -> relative PNG path; ``chain_figure``: relative path or None."""
    from .sections import study_section
    from .summary import header, summary

    lines = header(data) + summary(data, chain_figure)
    for i, s in enumerate(data.studies, 1):
        lines.append("")
        lines += study_section(data, i, s, figures.get(s.spec.name))
    return "\n".join(lines).rstrip("\n") + "\n"


def render_report(data: ReportInput, *, fmt: str = "md", jobs: Optional[int] = None,
                  timings: Optional[dict] = None) -> dict[str, bytes]:
    """Relative path -> content of every file of the report.

    ``jobs``: processes drawing figures (default: up to 4 CPUs; 1 draws here, in order; the bytes
    are the same either way). ``timings``, when given, is filled with seconds spent in ``setup``
    (lazy imports: matplotlib), ``figures`` and ``markdown``. Raises ValueError for an unknown
    ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (md or html)")
    t_start = time.perf_counter()
    from . import figures as fig
    from .format import slug
    from .summary import chain_rows, reported

    t0 = time.perf_counter()
    tasks, targets = [], []
    used: set[str] = {CHAIN_FIGURE}
    for s in data.studies:
        if s.curves.empty:
            continue
        name = slug(s.spec.name)
        while name in used:
            name += "_"
        used.add(name)
        label = s.best_label + (", kept incumbent" if s.kept_incumbent else "")
        tasks.append((fig.study_figure, (s.curves, data.ordered_metrics(s.objective),
                                         s.variant_order(), s.best.variant if s.best else None,
                                         s.spec.title or s.spec.name, label)))
        targets.append((s.spec.name, name))
    metric = data.metric(data.objective.metric)
    steps = [fig.ChainStep(c.study.spec.name, c.study.best.variant, c.value, c.base_value,
                           reported(c.study, c.study.best.variant, metric.name),
                           c.study.kept_incumbent)
             for c in chain_rows(data) if c.value is not None]
    tasks.append((fig.chain_figure, (steps, metric,
                                     f"{data.name}: winner's {metric.name} along the chain")))
    targets.append((None, CHAIN_FIGURE))

    files: dict[str, bytes] = {}
    figure_paths: dict[str, str] = {}
    chain_rel = None
    for (study, name), png in zip(targets, fig.render_many(tasks, jobs=jobs)):
        if png is None:
            continue
        rel = f"{FIGURES_DIR}/{name}.png"
        files[rel] = png
        if study is None:
            chain_rel = rel
        else:
            figure_paths[study] = rel
    t1 = time.perf_counter()

    md = render_markdown(data, figure_paths, chain_rel)
    files["report.md"] = md.encode("utf-8")
    if fmt == "html":
        from .html import to_html

        files["report.html"] = to_html(md, f"Ablation report: {data.name}").encode("utf-8")
    t2 = time.perf_counter()
    if timings is not None:
        timings.update(setup=t0 - t_start, figures=t1 - t0, markdown=t2 - t1)
    return files

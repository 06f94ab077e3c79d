"""The ablation report: markdown (and optional HTML) plus PNG figures, from the result database.

``render_report(store, plan, out_dir)`` reads the plan's studies (one query per table), summarises
them with the scheduler's own winner rule (:mod:`runner.orchestrate.results`), draws one figure per study and a
waterfall of the chain, and writes ``out_dir/report.md`` and ``out_dir/figures/*.png`` atomically.
The same database gives byte-identical output; a report can be rendered while studies still run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from runner.atomic import write_bytes_atomic

from .data import ReportData, StudyData, load_report_data
from .plan import RefNumbers, ReportPlan, ReportStudy, plan_from_study_plan

__all__ = ["render_report", "log_report_to_mlflow", "load_report_data", "ReportPlan",
           "ReportStudy", "RefNumbers", "ReportData", "StudyData", "plan_from_study_plan"]

FIGURES_DIR = "figures"
CHAIN_FIGURE = "chain"


def render_report(store: Any, plan: Any, out_dir: os.PathLike | str, *, fmt: str = "md",
                  jobs: Optional[int] = None, timings: Optional[dict] = None) -> Path:
    """Write ``out_dir/report.md`` (+ ``report.html`` for ``fmt="html"``) and the figures.

    ``plan``: a :class:`ReportPlan` or an ``ablations.StudyPlan``. ``timings``, when given, is
    filled with seconds spent in ``setup`` (lazy imports), ``read``, ``figures`` and ``markdown``. ``jobs``: processes
    drawing figures (default: up to 4 CPUs; 1 draws here). Returns the report path.
    """
    t_start = time.perf_counter()
    from . import figures as fig
    from .markdown import chain, render_markdown, report_grader, slug, to_html

    if fmt not in ("md", "html"):
        raise ValueError(f"unknown report format {fmt!r} (md or html)")
    plan = plan_from_study_plan(plan)
    out = Path(out_dir)
    fig_dir = out / FIGURES_DIR
    t0 = time.perf_counter()
    data = load_report_data(store, plan)
    t1 = time.perf_counter()

    figure_paths: dict[str, str] = {}
    tasks, targets = [], []
    used: set[str] = {CHAIN_FIGURE}
    for s in data.studies:
        if s.curves.empty:
            continue
        name = slug(s.spec.name)
        while name in used:
            name += "_"
        used.add(name)
        tasks.append((fig.study_figure, (s.curves, s.variant_order(),
                                         s.best.variant if s.best else None,
                                         s.spec.title or s.spec.name, s.best_label)))
        targets.append((s.spec.name, name))
    steps = []
    for c in chain(data):
        w = c.study.best
        if w is None:
            continue
        base = c.base.best.mean_grader if c.base is not None and c.base.best else None
        steps.append(fig.ChainStep(c.study.spec.name, w.variant, w.mean_grader, base,
                                   report_grader(c.study, w.variant)))
    tasks.append((fig.chain_figure, (steps, f"{plan.name}: winner's grader along the chain")))
    targets.append((None, CHAIN_FIGURE))
    chain_rel = None
    for (study, name), png in zip(targets, fig.render_many(tasks, jobs=jobs)):
        if png is None:
            continue
        write_bytes_atomic(fig_dir / f"{name}.png", png)
        if study is None:
            chain_rel = f"{FIGURES_DIR}/{name}.png"
        else:
            figure_paths[study] = f"{FIGURES_DIR}/{name}.png"
    t2 = time.perf_counter()

    md = render_markdown(data, figure_paths, chain_rel)
    report = out / "report.md"
    write_bytes_atomic(report, md.encode("utf-8"))
    if fmt == "html":
        write_bytes_atomic(out / "report.html",
                     to_html(md, f"Ablation report: {plan.name}").encode("utf-8"))
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(setup=t0 - t_start, read=t1 - t0, figures=t2 - t1, markdown=t3 - t2)
    return report


def log_report_to_mlflow(report_dir: os.PathLike | str, tracking_uri: str, experiment_name: str,
                         *, artifact_location: Optional[str] = None) -> str:
    """Log ``report.md`` (``report.html``) and ``figures/`` as artifacts of the run named "report".

    Reuses the run tagged ``ablate.kind=report`` in the experiment if there is one, else creates
    it (and the experiment, at ``artifact_location`` when given, through
    :func:`runner.tracking.mlflow_tracker.ensure_experiment`: a concurrent create is tolerated, a deleted
    experiment restored). Returns the MLflow run id.
    """
    from mlflow.tracking import MlflowClient

    from runner.tracking.mlflow_tracker import ensure_experiment

    report_dir = Path(report_dir)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(client, experiment_name, artifact_location)
    found = client.search_runs([exp_id], filter_string="tags.`ablate.kind` = 'report'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(exp_id, run_name="report",
                                   tags={"ablate.kind": "report"}).info.run_id
    for name in ("report.md", "report.html"):
        if (report_dir / name).is_file():
            client.log_artifact(run_id, str(report_dir / name))
    if (report_dir / FIGURES_DIR).is_dir():
        client.log_artifacts(run_id, str(report_dir / FIGURES_DIR), artifact_path=FIGURES_DIR)
    client.set_terminated(run_id)
    return run_id

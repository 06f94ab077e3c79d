"""Read everything the report needs from the result database in one query per table.

The studies of the plan/profile are selected first; trials, runs and epoch metrics are then read
with one ``pandas.read_sql`` each, filtered by those study ids. The
per-study variant summaries and winners come from :mod:`runner.orchestrate.results` (the scheduler's own rule).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
from sqlalchemy import select

from runner.orchestrate.results import VariantResult, pick_winner, study_finished, summarise
from runner.store import epoch_metrics, runs, studies, trials

from .plan import ReportPlan, ReportStudy

#: run columns joined onto a trial row, as ``ResultStore.study_trials`` does
TRIAL_RUN_COLUMNS = ["status", "final_grader", "final_iou", "final_si_logrmse", "best_grader",
                     "params", "wall_time_s", "error", "config_json", "mlflow_run_id",
                     "epochs_done", "worker"]
CURVE_COLUMNS = ["grader", "iou", "si_logrmse"]


@dataclass
class StudyData:
    spec: ReportStudy
    row: Optional[dict]                         # the ``studies`` row (None: not created yet)
    trials: list[dict]                          # study_trials-like rows, ordered by trial id
    results: list[VariantResult]                # runner.orchestrate.results.summarise(trials)
    best: Optional[VariantResult]               # runner.orchestrate.results.pick_winner(results)
    finished: bool                              # runner.orchestrate.results.study_finished(results)
    status_counts: dict[str, int]
    curves: pd.DataFrame                        # epoch metrics with study's variant and seed

    @property
    def winner(self) -> Optional[VariantResult]:
        """The study's winner, as the scheduler decides it: only once every cell is terminal."""
        return self.best if self.finished else None

    @property
    def best_label(self) -> str:
        """"winner" for a finished study; "leading" while cells are still pending/running."""
        return "winner" if self.finished else "leading"

    @property
    def n_done(self) -> int:
        return self.status_counts.get("done", 0)

    def result(self, variant: str) -> Optional[VariantResult]:
        for r in self.results:
            if r.variant == variant:
                return r
        return None

    def variant_order(self) -> list[str]:
        """The study file's variants first (file order), then any others in trial order."""
        seen = [v for v in self.spec.variants]
        for r in self.results:
            if r.variant not in seen:
                seen.append(r.variant)
        return seen


@dataclass
class ReportData:
    plan: ReportPlan
    studies: list[StudyData]
    runs: pd.DataFrame                          # distinct runs referenced by the plan's trials
    extra_studies: list[str] = field(default_factory=list)   # in the DB, not in the study file

    def study(self, name: str) -> Optional[StudyData]:
        for s in self.studies:
            if s.spec.name == name:
                return s
        return None


def _records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts of plain Python values, NaN/NA as None."""
    if df.empty:
        return []
    obj = df.astype(object)
    return obj.where(obj.notna(), None).to_dict("records")


def _read(store: Any, fn):
    retry = getattr(store, "_retry", None)
    return retry(fn) if retry else fn()


def load_report_data(store: Any, plan: ReportPlan) -> ReportData:
    """One query per table (studies, trials, runs, epoch_metrics)."""
    def query():
        with store.engine.connect() as conn:
            sdf = pd.read_sql(select(studies).where(studies.c.plan == plan.name,
                                                    studies.c.profile == plan.profile)
                              .order_by(studies.c.position, studies.c.id), conn)
            ids = [int(i) for i in sdf["id"]]
            tdf = pd.read_sql(select(trials).where(trials.c.study_id.in_(ids))
                              .order_by(trials.c.id), conn)
            hashes = select(trials.c.run_hash).where(trials.c.study_id.in_(ids),
                                                     trials.c.run_hash.is_not(None))
            rdf = pd.read_sql(select(runs).where(runs.c.hash.in_(hashes)).order_by(runs.c.hash), conn)
            edf = pd.read_sql(
                select(epoch_metrics.c.run_hash, epoch_metrics.c.epoch, epoch_metrics.c.step,
                       epoch_metrics.c.wall_time_s, epoch_metrics.c.grader, epoch_metrics.c.iou,
                       epoch_metrics.c.si_logrmse)
                .where(epoch_metrics.c.run_hash.in_(hashes))
                .order_by(epoch_metrics.c.run_hash, epoch_metrics.c.epoch), conn)
            return sdf, tdf, rdf, edf

    sdf, tdf, rdf, edf = _read(store, query)
    return assemble(plan, sdf, tdf, rdf, edf)


def assemble(plan: ReportPlan, sdf: pd.DataFrame, tdf: pd.DataFrame, rdf: pd.DataFrame,
             edf: pd.DataFrame) -> ReportData:
    """Build the per-study view from the raw table frames."""
    run_cols = rdf[["hash"] + TRIAL_RUN_COLUMNS].rename(columns={"hash": "run_hash"})
    joined = tdf.merge(run_cols, on="run_hash", how="left", sort=False)
    joined = joined.sort_values("id", kind="stable")
    rows_by_study: dict[int, list[dict]] = {}
    for row in _records(joined):
        rows_by_study.setdefault(int(row["study_id"]), []).append(row)

    cells = tdf[["study_id", "variant", "seed", "run_hash"]].dropna(subset=["run_hash"])
    curves = edf.merge(cells, on="run_hash", how="inner", sort=False)
    curves_by_study = {int(k): g.drop(columns="study_id").sort_values(
        ["variant", "seed", "epoch"], kind="stable").reset_index(drop=True)
        for k, g in curves.groupby("study_id", sort=True)}
    empty_curves = pd.DataFrame(columns=["run_hash", "epoch", "step", "wall_time_s", *CURVE_COLUMNS,
                                         "variant", "seed"])

    db_rows = {row["name"]: row for row in _records(sdf)}
    out = []
    for spec in plan.studies:
        row = db_rows.get(spec.name)
        trial_rows = rows_by_study.get(int(row["id"]), []) if row else []
        for r in trial_rows:
            r["seed"] = int(r["seed"])
            for key in ("params", "epochs_done", "optuna_trial"):
                if r.get(key) is not None:
                    r[key] = int(r[key])
        results = summarise(trial_rows)
        for result in results:
            if result.params is not None:
                result.params = int(result.params)
        counts = Counter((r.get("status") or "unsampled") for r in trial_rows)
        out.append(StudyData(
            spec=spec, row=row, trials=trial_rows, results=results, best=pick_winner(results),
            finished=study_finished(results),
            status_counts=dict(sorted(counts.items())),
            curves=curves_by_study.get(int(row["id"]), empty_curves) if row else empty_curves))
    known = {s.name for s in plan.studies}
    extra = sorted(name for name in db_rows if name not in known)
    return ReportData(plan=plan, studies=out, runs=rdf, extra_studies=extra)

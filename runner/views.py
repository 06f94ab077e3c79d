"""Read-only commands over a study file and its result store: status, inspect, results, report.

None of them writes the result store: they walk the chain with :func:`runner.orchestrate.walk.survey`, which
joins the cells the study file declares with what is stored, so they also answer on a workspace
that does not exist yet (everything pending) and while a run is writing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ablations import StudySpec, resolve_config
from ablations.errors import InputError
from runner.orchestrate.walk import StudyState, studies_in_scope, survey
from runner.orchestrate.session import Session

_OUTCOMES = ("done", "running", "failed", "pruned", "interrupted", "pending", "unsampled")


def print_status(session: Session, states: Optional[list[StudyState]] = None) -> None:
    """Per study: counts per status, the winner, the reasons of failed trials and of studies that
    cannot run, and why a trial is interrupted (Ctrl-C, a dead worker, a full disk) or was
    restarted (an unreadable checkpoint)."""
    from rich.console import Console
    from rich.table import Table

    states = states if states is not None else survey(session, studies_in_scope(session, None))
    by_name = {s.name: s for s in states}
    console = Console(width=160)
    table = Table(title=f"{session.plan.name} [{session.profile}] in {session.workspace}", title_justify="left")
    for col in ("study", *_OUTCOMES[:5], "pending", "winner", "mean grader"):
        table.add_column(col)
    failures, notes = [], []
    for state in states:
        statuses = [s for r in state.results for s in r.statuses]
        counts = {k: statuses.count(k) for k in _OUTCOMES}
        grader = "-"
        if state.error is not None:
            winner = "blocked: cannot run (see below)"
        elif state.base is None:
            blocker = by_name.get(state.blocked_by)
            why = "cannot run" if blocker is not None and blocker.error else "has no winner"
            winner = f"waiting for {state.spec.start_from}" + (
                f" (blocked: {state.blocked_by} {why})" if state.blocked_by else "")
        elif state.winner is not None:
            winner, grader = state.winner.variant, f"{state.winner.mean_grader:.3f}"
        else:
            winner = "no winner (all failed)" if state.finished else "-"
        table.add_row(state.name, *(str(counts[k]) for k in _OUTCOMES[:5]),
                      str(counts["pending"] + counts["unsampled"]), winner, grader)
        failures += [f"{state.name} / {t['variant']} / seed {t['seed']}: {t['error'] or '?'}"
                     for t in state.rows if t["status"] == "failed"]
        notes += [f"{t['status']} {state.name} / {t['variant']} / seed {t['seed']}: {t['error']}"
                  for t in state.rows if t["status"] in ("interrupted", "running", "done") and t["error"]]
    console.print(table)
    for state in states:  # a pin overrides the inherited winner: say what and why
        if state.spec.pin is not None:
            console.print(f"pin {state.name}: {json.dumps(state.spec.pin.set, sort_keys=True)} over the "
                          f"winner of {state.spec.start_from or 'the profile base'}: "
                          f"{state.spec.pin.reason or '(no reason given)'}", highlight=False, markup=False)
    for line in failures:
        console.print(f"[red]failed[/red] {line}", highlight=False)
    for state in states:
        if state.error is not None:
            console.print(f"blocked {state.name}: {state.error}", highlight=False, markup=False, soft_wrap=True)
    for line in notes:
        console.print(line, highlight=False, markup=False)


def projected_bases(session: Session) -> dict[str, tuple[dict, str]]:
    """Base config of every study and where it comes from, without training anything.

    The base is the profile's, or the winner of the study it starts from: the real winner once
    known, else the variant the report itself chose (highest report grader), else that study's
    first variant. A study that starts from one whose variants cannot be built on its own base
    has none (``print_inspect`` says why).
    """
    from ablations import profile_base

    bases: dict[str, tuple[dict, str]] = {}
    winners: dict[str, tuple[dict, str]] = {}
    for state in survey(session, studies_in_scope(session, None)):
        spec = state.spec
        if spec.start_from is None:
            bases[spec.name] = (profile_base(session.plan), "profile defaults")
        elif spec.start_from in winners:
            parent_config, how = winners[spec.start_from]
            bases[spec.name] = (parent_config, f"{how} of {spec.start_from}")
        else:
            continue
        if state.winner is not None:
            winners[spec.name] = (state.winner.config, f"winner {state.winner.variant}")
        else:
            try:
                winners[spec.name] = _projected_winner(spec, bases[spec.name][0])
            except InputError:
                pass  # its variants cannot be built on this base: the studies after it have none
    return bases


def _projected_winner(spec: StudySpec, base: dict) -> tuple[dict, str]:
    if not spec.variants:  # a search study: its base stands in for its winner
        return base, "base (search not run)"
    chosen = spec.variants[0]
    graded = [v for v in spec.variants if v.name in spec.report and spec.report[v.name].grader is not None]
    how = "first variant (not run)"
    if graded:
        chosen = max(graded, key=lambda v: spec.report[v.name].grader)
        how = "report's winner (not run)"
    return resolve_config(base, spec, chosen, spec.seeds[0]).flat(), f"{how}: {chosen.name}"


def print_inspect(session: Session, count_params: bool = True) -> None:
    """Every trial's resolved config as a diff against its study's base, with #params."""
    from ablations import expand_study
    from runner.tasks.mtl.config import Config as TrainConfig

    bases = projected_bases(session)
    param_cache = None
    if count_params:  # kept in an existing workspace only: inspect creates none
        param_cache = _ParamCounts(session.workspace / "cache" / "param_counts.json",
                                   keep=session.workspace.is_dir())
    for spec in session.plan.studies:
        if spec.name not in bases:
            print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: none ({spec.start_from} cannot run)")
            continue
        base, origin = bases[spec.name]
        # The profile base (defaults + overrides) names only some keys: diff against it as a
        # full config, or every unnamed key (amp, aspp_rates, ...) shows up as a difference.
        full_base = TrainConfig(**base).flat() if spec.kind != "search" else base
        pin = f"; pinned {spec.pin.set} ({spec.pin.reason})" if spec.pin else ""
        print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: {origin}{pin}")
        if spec.kind == "search":
            space = ", ".join(f"{k}: {p.type} {p.choices or (p.low, p.high)}" for k, p in spec.search.space.items())
            print(f"   search {spec.search.sampler} x {spec.search.n_trials} trials over {space}; "
                  f"pruner {spec.search.pruner}")
            continue
        try:
            trials = expand_study(spec, base)
        except InputError as exc:
            print(f"   blocked: {exc}")
            continue
        for trial in trials:
            flat = trial.config.flat()
            diff = {k: v for k, v in flat.items() if full_base.get(k) != v}
            params = ""
            if param_cache is not None:
                params = f"  #params {param_cache.count(trial.config):,}"
            print(f"   {trial.variant} seed={trial.seed} hash={trial.config_hash}{params}  "
                  f"{json.dumps(diff, sort_keys=True)}")
    if param_cache is not None:
        param_cache.save()


class _ParamCounts:
    """Parameter counts per model config: built once per model config (on the ``meta`` device:
    no memory, no weight init) and kept in ``<workspace>/cache/param_counts.json``, so a second
    ``ablate inspect`` builds nothing. ``keep`` False: counted, never written."""

    def __init__(self, path: Path, keep: bool = True):
        self.path = path
        self.keep = keep
        try:
            self.counts: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.counts = {}
        self.dirty = False

    def count(self, config) -> int:
        model_config = config.to_model_config()
        if model_config.encoder_weights != "none":  # weights do not change the count: skip loading
            model_config = model_config.model_copy(update={"encoder_weights": "none"})
        key = json.dumps(model_config.model_dump(mode="json"), sort_keys=True)
        if key not in self.counts:
            import torch

            from models import build_model, count_parameters

            with torch.device("meta"):
                self.counts[key] = count_parameters(build_model(model_config))
            self.dirty = True
        return self.counts[key]

    def save(self) -> None:
        if self.dirty and self.keep:
            from runner.atomic import write_text_atomic

            write_text_atomic(self.path, json.dumps(self.counts, sort_keys=True, indent=1))


def results_frame(session: Session):
    import pandas as pd

    rows = []
    for state in survey(session, studies_in_scope(session, None)):
        if not state.ready:
            continue
        for t in state.rows:
            rows.append({
                "study": state.name, "variant": t["variant"], "seed": t["seed"], "status": t["status"] or "unsampled",
                "grader": t["final_grader"], "iou": t["final_iou"], "si_logrmse": t["final_si_logrmse"],
                "best_grader": t["best_grader"], "params": t["params"], "wall_time_s": t["wall_time_s"],
                "winner": state.winner is not None and state.winner.variant == t["variant"],
                "run_hash": t["run_hash"], "mlflow_run_id": t["mlflow_run_id"], "error": t["error"],
                "overrides": t["overrides_json"]})
    return pd.DataFrame(rows, columns=["study", "variant", "seed", "status", "grader", "iou", "si_logrmse",
                                       "best_grader", "params", "wall_time_s", "winner", "run_hash",
                                       "mlflow_run_id", "error", "overrides"])


def export_results(session: Session, fmt: str) -> str:
    frame = results_frame(session)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    return frame.to_markdown(index=False, floatfmt=".3f") + "\n"


def write_report(session: Session, fmt: str = "md", log_to_mlflow: bool = True) -> Path:
    """Write the report into ``<workspace>/report/`` (the one thing a read command creates) and
    log it to MLflow when there is an MLflow store to log to: a workspace whose ``mlflow.db``
    does not exist yet gets none created (nothing ran there)."""
    from reports import log_report_to_mlflow, plan_from_study_plan, render_report
    from runner.sqlite_files import check_store_file
    from runner.tracking.mlflow_files import mlflow_sqlite_uri
    from runner.store import sqlite_path

    out_dir = session.workspace / "report"
    path = render_report(session.store, plan_from_study_plan(session.plan), out_dir, fmt=fmt)
    tracking_uri = session.tracking_uri
    if tracking_uri.startswith("sqlite"):
        mlflow_db = sqlite_path(tracking_uri)
        log_to_mlflow = log_to_mlflow and mlflow_db is not None and mlflow_db.is_file()
    if log_to_mlflow:
        try:
            if tracking_uri.startswith("sqlite"):
                check_store_file(mlflow_db, "mlflow", session.workspace)
                tracking_uri = mlflow_sqlite_uri(mlflow_db)
            log_report_to_mlflow(out_dir, tracking_uri, session.experiment,
                                 artifact_location=session.artifact_location)
        except Exception as exc:  # noqa: BLE001 - the report is on disk; say where, and why MLflow has none
            from runner.orchestrate.session import mlflow_unreachable

            reason = str(exc) if isinstance(exc, InputError) else str(mlflow_unreachable(tracking_uri, exc))
            raise InputError(f"{path} written, but not logged to MLflow: {reason}") from None
    return path

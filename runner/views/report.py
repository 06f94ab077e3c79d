"""``ablate report``: read the study file's results from the store, render the report (a pure
function in :mod:`reports`), write it into ``<workspace>/report/`` atomically and log it to the
tracker when there is a tracker store to log to (a workspace whose tracker store does not exist
yet gets none created: nothing ran there)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ablations.errors import InputError, writing
from runner.atomic import write_bytes_atomic
from runner.orchestrate.provenance import stale_results
from runner.orchestrate.session import Session
from runner.orchestrate.walk import StudyState, studies_in_scope, survey


def report_input(session: Session, states: list[StudyState]):
    """The report's input: the plan's facts, each study's results and curves, the run totals."""
    import pandas as pd

    from reports import MetricInfo, ReportInput, StudyReport

    store, task = session.store, session.task
    declared = list(task.metrics)
    hashes = sorted({c.run_hash for s in states for c in s.cells if c.run_hash})
    runs = store.runs(hashes)
    epochs = store.epochs(hashes)
    studies = []
    for state in states:
        cell_of = {c.run_hash: c for c in state.cells if c.run_hash}
        rows = [{"run_hash": e.run_hash, "variant": cell_of[e.run_hash].variant, "seed": cell_of[e.run_hash].seed,
                 "epoch": e.epoch, "step": e.step, "wall_time_s": e.wall_time_s,
                 **{m: e.metrics.get(m, float("nan")) for m in declared}}
                for e in epochs if e.run_hash in cell_of]
        curves = pd.DataFrame(rows, columns=["run_hash", "variant", "seed", "epoch", "step", "wall_time_s", *declared])
        curves = curves.sort_values(["variant", "seed", "epoch"], kind="stable").reset_index(drop=True)
        record = store.find_study(session.plan.name, session.profile, state.name) if state.spec.pin is None else None
        pin = _StoredPin(record.pin, record.pin_reason) if record is not None and record.pin else None
        studies.append(StudyReport(
            spec=state.spec, objective=state.spec.objective, results=state.results, finished=state.finished,
            status_counts=dict(sorted(Counter(c.status or "unsampled" for c in state.cells).items())),
            cells=state.cells, curves=curves, pin_from_store=pin, incumbent=state.incumbent))
    known = {s.name for s in session.plan.studies}
    return ReportInput(
        name=session.plan.name, profile=session.profile, file=Path(session.study_file).name, task=task.name,
        metrics=[MetricInfo(name, goal, task.label(name)) for name, goal in task.metrics.items()],
        objective=session.plan.objective, studies=studies, runs_total=len(runs),
        runs_done=sum(r.status == "done" for r in runs.values()),
        wall_time_total_s=sum(r.wall_time_s or 0.0 for r in runs.values()),
        extra_studies=sorted(n for n in store.study_names(session.plan.name, session.profile) if n not in known),
        stale=stale_results(session, states))


class _StoredPin:
    def __init__(self, values: dict, reason):
        self.set, self.reason = values, reason


def write_report(session: Session, fmt: str = "md", log: bool = True) -> Path:
    from reports import render_report

    files = render_report(report_input(session, survey(session, studies_in_scope(session, None))), fmt=fmt)
    out_dir = session.workspace / "report"
    with writing("--workspace", session.workspace, inside=True):
        for relative, content in sorted(files.items()):
            write_bytes_atomic(out_dir / relative, content)
    path = out_dir / "report.md"
    if log:
        try:
            tracker = session.report_tracker()
            if tracker is not None:
                tracker.log_report(out_dir)
        except Exception as exc:  # noqa: BLE001 - the report is on disk; say where, and why the tracker has none
            raise InputError(f"{path} written, but not logged to the tracker: {exc}") from None
    return path

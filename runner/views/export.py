"""``ablate results``: every declared trial with its metrics, one row per cell.

Columns: study, variant, seed, status, the task's declared metrics, one column per config key
some variant varies (its value in that trial), any other final scalar the task returned, then params, wall time, whether the variant won its study, run hash, tracker run id
and error. Markdown (a terminal table) shows the declared metrics only; csv and json have all.
"""
from __future__ import annotations

from runner.orchestrate.session import Session
from runner.orchestrate.walk import studies_in_scope, survey

_FIXED = ["study", "variant", "seed", "status"]
_TAIL = ["params", "wall_time_s", "winner", "run_hash", "tracking_run_id", "error"]


def results_frame(session: Session, *, all_metrics: bool = True):
    import pandas as pd

    states = [s for s in survey(session, studies_in_scope(session, None)) if s.ready]
    declared = list(session.task.metrics)
    varied = sorted({k for s in states for c in s.cells for k in (c.overrides or {})})
    extra = sorted({m for s in states for c in s.cells for m in c.metrics} - set(declared)) if all_metrics else []
    # every column says what it holds: a declared metric keeps its name unless a fixed column has
    # it (then metric.<name>); a varied config key is named as it is unless a metric or a fixed
    # column has it (then config.<key>); any other final scalar becomes final.<name> on a clash
    taken = set(_FIXED) | set(_TAIL)
    metric_column = {m: f"metric.{m}" if m in taken else m for m in declared}
    taken |= set(metric_column.values())
    key_column = {k: f"config.{k}" if k in taken or k in declared else k for k in varied}
    taken |= set(key_column.values())
    extra_column = {m: f"final.{m}" if m in taken else m for m in extra}
    rows = []
    for state in states:
        for c in state.cells:
            row = {"study": state.name, "variant": c.variant, "seed": c.seed, "status": c.status or "unsampled"}
            row.update({metric_column[m]: c.metrics.get(m) for m in declared})
            row.update({extra_column[m]: c.metrics.get(m) for m in extra})
            row.update({key_column[k]: _cell_value((c.config or {}).get(k)) for k in varied})
            row.update(params=c.params, wall_time_s=c.wall_time_s,
                       winner=state.winner is not None and state.winner.variant == c.variant,
                       run_hash=c.run_hash, tracking_run_id=c.tracking_run_id, error=c.error)
            rows.append(row)
    columns = _FIXED + [metric_column[m] for m in declared] + [key_column[k] for k in varied] + [extra_column[m] for m in extra] + _TAIL
    return pd.DataFrame(rows, columns=columns)


def _cell_value(value):
    """A config value as one table cell (a list such as a crop size as ``64x128``)."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return value


def export_results(session: Session, fmt: str) -> str:
    frame = results_frame(session, all_metrics=fmt != "markdown")
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    return frame.to_markdown(index=False, floatfmt=".3f") + "\n"

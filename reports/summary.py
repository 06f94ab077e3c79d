"""The report's head: title, the verdicts on the report's claims (:mod:`reports.verdicts`), the
chain of studies with their winners and gains, totals, failures.

The chain is compared on the study file's default objective (``ReportInput.objective``): each
study's best variant (decided by the study's own objective) with its mean of that metric, and the
gain over its base in objective units, positive for an improvement whatever the goal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ablations.objective import Objective

from .format import DASH, counts_text, first_line, fmt, fmt_gain, table
from .model import ReportInput, StudyReport, report_number


@dataclass(frozen=True)
class ChainRow:
    study: StudyReport
    base: Optional[StudyReport]    # the study the gain is measured from (None: the first)
    value: Optional[float]         # the best variant's mean of the file objective's metric
    base_value: Optional[float]    # the base's best variant's mean of that metric
    gain: Optional[float]          # improvement over ``base_value`` (positive: better)


def improvement(objective: Objective, value: Optional[float], base: Optional[float]) -> Optional[float]:
    """``value`` minus ``base`` oriented by the goal: positive when ``value`` is better."""
    if value is None or base is None:
        return None
    return value - base if objective.goal == "max" else base - value


def chain_rows(data: ReportInput) -> list[ChainRow]:
    """Each study with its base: ``start_from`` when set, else the previous study in file order."""
    metric = data.objective.metric
    rows, prev = [], None
    for s in data.studies:
        base = data.study(s.spec.start_from) if s.spec.start_from else prev
        value = s.best_mean(metric)
        base_value = base.best_mean(metric) if base is not None else None
        rows.append(ChainRow(s, base, value, base_value,
                             improvement(data.objective, value, base_value)))
        prev = s
    return rows


def final_study(data: ReportInput) -> Optional[StudyReport]:
    decided = [s for s in data.studies if s.best is not None]
    return decided[-1] if decided else None


def section_label(s: StudyReport) -> str:
    return f"§{s.spec.section}" if s.spec.section else DASH


def reported(s: StudyReport, variant: Optional[str], metric: str) -> Optional[float]:
    """The study file's report value of ``metric`` for ``variant``, if it gives one."""
    value = report_number(s.report_numbers(variant), metric)
    return None if value is None else float(value)


def header(data: ReportInput) -> list[str]:
    meta = f"Profile `{data.profile}`"
    if data.file:
        meta += f" · study file `{data.file}`"
    n = len(data.studies)
    meta += f" · task `{data.task}` · {n} stud{'y' if n == 1 else 'ies'}"
    return [f"# Ablation report: {data.name}", "", meta, "",
            f"Objective: {data.objective.describe()}.", ""]


def summary(data: ReportInput, chain_figure: Optional[str]) -> list[str]:
    """The summary section; ``chain_figure``: the chain figure's relative path, if drawn."""
    objective = data.objective
    metric = objective.metric
    label = data.metric(metric).label
    from .verdicts import verdict_lines

    lines = ["## Summary", ""] + verdict_lines(data)
    rows = chain_rows(data)
    decided = sum(1 for s in data.studies if s.winner is not None)
    final = final_study(data)
    if final is None:
        lines.append("No study has a winner yet.")
    else:
        row = next(r for r in rows if r.study is final)
        ref = reported(final, final.best.variant, metric)
        text = (f"**Final model:** `{final.best.variant}` from study `{final.spec.name}` — "
                f"mean {metric} {fmt(row.value)}")
        if not final.finished:
            text += " (leading; the study is not finished)"
        if ref is not None:
            text += f" (report: {fmt(ref)})"
        first = next(r for r in rows if r.study.best is not None)
        if first.study is not final:
            text += (f"; baseline `{first.study.best.variant}` of `{first.study.spec.name}`: "
                     f"{fmt(first.value)}, total gain "
                     f"{fmt_gain(improvement(objective, row.value, first.value))}")
        text += "."
        if decided < len(data.studies):
            text += f" Chain incomplete: {decided} of {len(data.studies)} studies decided."
        lines.append(text)
    lines.append("")
    table_rows = []
    for i, c in enumerate(rows, 1):
        s, w = c.study, c.study.best
        winner = (f"`{w.variant}`" + ("" if s.finished else " (leading)")
                  + (" (kept incumbent)" if s.kept_incumbent else "")) if w else DASH
        table_rows.append([i, s.spec.name, section_label(s), winner, fmt(c.value), fmt_gain(c.gain),
                           c.base.spec.name if c.base is not None else "baseline",
                           fmt(reported(s, w.variant if w else None, metric))])
    lines += table(["#", "Study", "Report §", "Winner", f"{label} (mean)", "Gain", "Gain over",
                    f"report {label}"], table_rows)
    lines.append("")
    if chain_figure:
        lines += [f"![Winner's {metric} along the chain]({chain_figure})", ""]
    lines += _totals(data, decided)
    lines.append("")
    return lines + _failed(data) + _stale(data)


def _totals(data: ReportInput, decided: int) -> list[str]:
    counts: dict[str, int] = {}
    for s in data.studies:
        for status, n in s.status_counts.items():
            counts[status] = counts.get(status, 0) + n
    trials = sum(len(s.cells) for s in data.studies)
    started = sum(1 for s in data.studies if s.cells)
    lines = [f"- Studies: {len(data.studies)} ({decided} with a winner, {started} started)",
             f"- Trials: {trials} ({counts_text(counts)})",
             f"- Runs trained: {data.runs_done} of {data.runs_total} distinct runs "
             "(a run shared by several studies is trained and counted once)",
             f"- Compute: {data.wall_time_total_s / 3600:.2f} h of training wall time "
             "(sum over distinct runs and attempts)"]
    if data.extra_studies:
        lines.append("- In the database but not in the study file (not reported): "
                     + ", ".join(f"`{n}`" for n in data.extra_studies))
    return lines


def _stale(data: ReportInput) -> list[str]:
    """Results trained by other code or data than today's: still results, flagged."""
    if not data.stale:
        return []
    rows = [[s.study, s.variant, s.seed, f"`{s.run_hash}`", s.reason] for s in data.stale]
    return ["", "### Results trained by other code or data", "",
            "These results count as above; their runs were trained by another code version or on other "
            "data than today's (`identity: {code: strict}` in the study file trains them again).", ""] + \
        table(["Study", "Variant", "Seed", "Run", "Trained"], rows)


def _failed(data: ReportInput) -> list[str]:
    failed = [[s.spec.name, c.variant, c.seed, f"`{c.run_hash}`", first_line(c.error)]
              for s in data.studies for c in s.cells if c.status == "failed"]
    lines = ["### Failed trials", ""]
    if failed:
        return lines + table(["Study", "Variant", "Seed", "Run", "Error"], failed)
    return lines + ["No failed trials."]

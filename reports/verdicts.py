"""A verdict on each claim of the report: did our runs reproduce the winner it picked?

A study whose ``report:`` numbers cover at least two of the variants we ran makes one claim: the
report's best variant on a metric beat its runner-up there, by the difference of their numbers.
We test the same two variants' samples of that metric (Welch's t-test, :func:`ablations.stats.
difference`, at the study's ``advance`` alpha):

* ``reproduced``: our difference is significant in the report's direction;
* ``contradicted``: it is significant in the other direction;
* ``inconclusive``: not significant, fewer than 2 seeds on a side, or not run yet.

The metric is the study's objective when the report gives numbers for it, else its tie-break
metrics, else the task's declared metrics in order (a profile may decide on a metric the report
did not print, e.g. an unclamped score): the first that the report gives for two variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ablations.advance import AdvanceRule
from ablations.stats import Difference, difference

from .format import DASH, fmt_gain, fmt_p, table
from .model import MetricInfo, ReportInput, StudyReport, report_number

VERDICTS = ("reproduced", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """The report's claim in one study and our verdict on it. ``report_diff`` and ``ours.diff``
    are oriented by the metric's goal: positive means the report's winner is better."""

    study: StudyReport
    metric: MetricInfo
    winner: str
    runner_up: str
    report_diff: float
    ours: Optional[Difference]
    verdict: str
    why: str


def _numbers(s: StudyReport, metric: str) -> dict[str, float]:
    """Variant -> the report's number for ``metric``, over the variants this study runs."""
    out = {}
    for variant in s.variant_order():
        value = report_number(s.report_numbers(variant), metric)
        if value is not None and not math.isnan(float(value)):
            out[variant] = float(value)
    return out


def claim_metric(data: ReportInput, s: StudyReport) -> Optional[MetricInfo]:
    """The metric the study's claim is made on (see the module docstring), with its goal."""
    objective = s.objective
    names = [objective.metric, *(m for m, _ in objective.tie_break), *(m.name for m in data.metrics)]
    for name in dict.fromkeys(names):
        if len(_numbers(s, name)) >= 2:
            info = data.metric(name)
            if name == objective.metric:
                return MetricInfo(info.name, objective.goal, info.label)
            return info
    return None


def claim(data: ReportInput, s: StudyReport) -> Optional[Claim]:
    """The study's claim and our verdict; None when the report gives numbers for fewer than two
    of the variants we run, or its two best tie."""
    metric = claim_metric(data, s)
    if metric is None:
        return None
    sign = 1.0 if metric.goal == "max" else -1.0
    numbers = _numbers(s, metric.name)
    ranked = sorted(numbers, key=lambda v: -sign * numbers[v])  # stable: file order breaks ties
    winner, second = ranked[:2]
    report_diff = sign * (numbers[winner] - numbers[second])
    if report_diff == 0:
        return None
    alpha = getattr(s.spec, "advance", AdvanceRule()).alpha
    ours = [s.result(v) for v in (winner, second)]
    d = None
    if all(r is not None for r in ours):
        d = difference(ours[0].values(metric.name), ours[1].values(metric.name), metric.goal, alpha)
    if d is None:
        return Claim(s, metric, winner, second, report_diff, None, "inconclusive",
                     "not run yet (no finished seed on a side)")
    if not d.enough_seeds:
        return Claim(s, metric, winner, second, report_diff, d, "inconclusive",
                     f"too few seeds ({d.n_a} vs {d.n_b}; a test needs 2 per variant)")
    if not d.significant:
        return Claim(s, metric, winner, second, report_diff, d, "inconclusive",
                     f"not significant at alpha {alpha:g}")
    verdict = "reproduced" if d.diff > 0 else "contradicted"
    return Claim(s, metric, winner, second, report_diff, d, verdict,
                 f"significant at alpha {alpha:g}")


def verdict_lines(data: ReportInput) -> list[str]:
    """The summary's opening: the count line, the verdict table and the studies without a claim
    (nothing when no study has report numbers)."""
    claims, lone = [], []
    for s in data.studies:
        c = claim(data, s)
        if c is not None:
            claims.append(c)
        elif any(s.report_numbers(v) for v in s.variant_order()):
            lone.append(s.spec.name)
    if not claims and not lone:
        return []
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines = [f"The report's claims: {counts['reproduced']} reproduced, {counts['contradicted']} "
             f"contradicted, {counts['inconclusive']} inconclusive.", ""]
    if claims:
        rows = []
        for c in claims:
            d = c.ours
            ci = DASH if d is None or math.isnan(d.ci_low) else f"[{fmt_gain(d.ci_low)}, {fmt_gain(d.ci_high)}]"
            rows.append([c.study.spec.name, c.metric.label, f"`{c.winner}` over `{c.runner_up}`",
                         fmt_gain(c.report_diff), fmt_gain(d.diff) if d else DASH, ci,
                         fmt_p(d.p) if d and not math.isnan(d.p) else DASH,
                         f"{d.n_a} vs {d.n_b}" if d else "0", f"**{c.verdict}**: {c.why}"])
        level = next((c.ours.level for c in claims if c.ours is not None), "95%")
        lines += table(["Study", "Metric", "Report's claim", "Report's difference", "Our difference",
                        f"Our {level} CI", "p", "Seeds", "Verdict"], rows)
        lines += ["", "_Differences are the claimed winner minus its runner-up, positive when the "
                      "winner is better; ours are means over seeds (Welch's t-test)._"]
    if lone:
        lines += ["", "No claim in " + ", ".join(f"`{n}`" for n in lone) + ": the report gives "
                  "numbers for only one of the variants run here (or its two best tie)."]
    return lines + [""]


__all__ = ["Claim", "VERDICTS", "claim", "claim_metric", "verdict_lines"]

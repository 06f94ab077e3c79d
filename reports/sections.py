"""One study's section: what it varies and starts from, the variant table, how the winner was
decided, the best run, Welch's test and the figure.

Columns follow the task's declared metrics, the study's objective first (with its 95% CI);
report numbers are shown for the metrics the study file gives them for.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from ablations.results import VariantResult
from ablations.stats import compare_winner, describe

from .format import (DASH, counts_text, fmt, fmt_ci, fmt_duration, fmt_p, fmt_params, fmt_sample,
                     fmt_value, table)
from .model import Cell, ReportInput, StudyReport, report_number

GOAL_TEXT = {"max": "higher is better", "min": "lower is better"}


def study_section(data: ReportInput, index: int, s: StudyReport, figure: Optional[str]) -> list[str]:
    """``figure``: the study figure's relative path, if one was drawn."""
    spec = s.spec
    title = spec.title or spec.name
    heading = f"## {index}. {title}"
    if spec.section:
        heading += f" (report §{spec.section})"
    lines = [heading, ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += _facts(data, s)
    lines.append("")

    if s.n_done == 0:
        lines.append(_nothing_done(s))
        if figure:
            lines += ["", f"![{title}]({figure})"]
        return lines

    lines += variant_table(data, s)
    decision = decision_text(s)
    if decision:
        lines += ["", decision]
    lines.append("")
    best = best_run(s)
    if best is not None:
        metric = s.objective.metric
        lines.append(f"**Best run:** `{best.variant}` seed {best.seed} — run `{best.run_hash}`, "
                     f"MLflow run `{best.tracking_run_id or DASH}` "
                     f"({metric} {fmt(best.metrics.get(metric))}).")
    else:
        lines.append("**Best run:** none yet (no variant has all its seeds finished).")
    if not s.finished:
        lines += ["", "_The study is not finished: the leading variant is provisional; the "
                      "scheduler names the winner once every trial is done, failed or pruned._"]
    welch = compare_winner(s.results, s.best, s.objective)
    if welch is not None:
        lines += ["", f"**Statistics:** Welch's t-test on the final {welch.metric}, {s.best_label} "
                      f"`{welch.winner}` (n={welch.n_winner}) vs runner-up `{welch.runner_up}` "
                      f"(n={welch.n_runner_up}): t = {fmt(welch.t)}, p = {fmt_p(welch.p)} — "
                      f"{welch.verdict}."]
    if figure:
        lines += ["", f"![{title}]({figure})"]
    return lines


def _facts(data: ReportInput, s: StudyReport) -> list[str]:
    spec = s.spec
    n_variants = len(s.variant_order())
    info = f"- Study `{spec.name}`"
    if spec.kind:
        info += f", kind `{spec.kind}`"
    info += f", {n_variants} variant{'s' if n_variants != 1 else ''}"
    adaptive = getattr(spec, "adaptive", None)
    if adaptive is not None:
        info += f", adaptive seeds ({adaptive.min} to {adaptive.max} per variant)"
    elif spec.seeds:
        info += ", seeds " + ", ".join(str(x) for x in spec.seeds)
    lines = [info + "."]
    if s.decision.rule.gated:
        inc = f"the incumbent `{s.incumbent}`" if s.incumbent else "an incumbent (none here)"
        lines.append(f"- The chain {s.decision.rule.describe()} over {inc}.")
    if s.objective != data.objective:
        lines.append(f"- Objective of this study: {s.objective.describe()}.")
    keys = _varied_keys(s)
    if keys:
        lines.append("- Varies: " + ", ".join(f"`{k}`" for k in keys) + ".")
    lines.append(_base_text(data, s))
    pin = s.pin
    if pin is not None and pin.set:
        text = "- Pinned over the inherited configuration: " + ", ".join(
            f"`{k}={fmt_value(pin.set[k])}`" for k in sorted(pin.set))
        if pin.reason:
            text += f" — {str(pin.reason).strip()}"
        lines.append(text + ("" if text.endswith(".") else "."))
    lines.append(f"- Trials: {len(s.cells)} ({counts_text(dict(s.status_counts))}).")
    return lines


def _base_text(data: ReportInput, s: StudyReport) -> str:
    start = s.spec.start_from
    if not start:
        return "- Base: the study file's base configuration."
    base = data.study(start)
    if base is None or base.best is None:
        return f"- Base: the winner of `{start}` (not decided yet)."
    mean = f"mean {base.objective.metric} {fmt(base.best_mean())}"
    if base.winner is not None:
        return f"- Base: the winner of `{start}`, `{base.winner.variant}` ({mean})."
    return f"- Base: the winner of `{start}` (not decided yet; leading: `{base.best.variant}`, {mean})."


def _varied_keys(s: StudyReport) -> list[str]:
    keys: set[str] = set()
    for v in s.spec.variants:
        keys.update(v.overrides or {})
    if not keys:          # e.g. a search study: the sampled overrides come with the results
        for r in s.results:
            keys.update(r.overrides or {})
    return sorted(keys)


def _nothing_done(s: StudyReport) -> str:
    if not s.cells:
        return "**No finished trials yet:** the study has no trials in the database (not started)."
    counts = s.status_counts
    pending = counts.get("pending", 0) + counts.get("unsampled", 0) + counts.get("interrupted", 0)
    return (f"**No finished trials yet:** {pending} pending, {counts.get('running', 0)} running, "
            f"{counts.get('failed', 0)} failed.")


def _n_text(r: Optional[VariantResult]) -> str:
    if r is None:
        return "0"
    n, total = len(r.done_seeds), len(r.statuses)
    if n == total:
        return str(n)
    others: dict[str, int] = {}
    for st in r.statuses:
        if st != "done":
            others[st] = others.get(st, 0) + 1
    return f"{n}/{total} ({counts_text(others)})"


def _mentioned(numbers: list[Any], key: str) -> bool:
    return any(report_number(x, key) is not None for x in numbers)


def variant_table(data: ReportInput, s: StudyReport) -> list[str]:
    metrics = data.ordered_metrics(s.objective)
    objective, others = metrics[0], metrics[1:]
    numbers = list((s.spec.report or {}).values())
    ref_metrics = [m for m in metrics if _mentioned(numbers, m.name)]
    ref_extra = [key for key in ("params", "time") if _mentioned(numbers, key)]
    headers = (["Variant", objective.label, f"{objective.label} 95% CI"]
               + [m.label for m in others] + ["#params", "training time", "n seeds"]
               + [f"report {m.label}" for m in ref_metrics]
               + [{"params": "report #params", "time": "report time"}[k] for k in ref_extra])
    winner = s.best.variant if s.best else None
    rows = []
    for variant in s.variant_order():
        r = s.result(variant)
        is_w = variant == winner
        main = describe(r.values(objective.name)) if r else None
        main_text = fmt_sample(main)
        t = describe(r.wall_time_s) if r else None
        row = [f"**{variant}** ({s.best_label})" if is_w else variant,
               f"**{main_text}**" if is_w else main_text, fmt_ci(main)]
        row += [fmt_sample(describe(r.values(m.name)) if r else None) for m in others]
        row += [fmt_params(r.params if r else None), fmt_duration(t.mean if t else None), _n_text(r)]
        ref = s.report_numbers(variant)
        row += [fmt(report_number(ref, m.name)) for m in ref_metrics]
        if "params" in ref_extra:
            row.append(fmt_params(report_number(ref, "params")))
        if "time" in ref_extra:
            row.append(report_number(ref, "time") or DASH)
        rows.append(row)
    return table(headers, rows)


def _mean(r: VariantResult, metric: str) -> str:
    return fmt(r.mean(metric))


def decision_text(s: StudyReport) -> Optional[str]:
    """Which metric told the best variant from the runner-up, said explicitly when a tie-break
    metric or the study file's order decided; under the significance gate, the gate's reason;
    with adaptive seeds, how many seeds the decision took."""
    best, second = s.best, s.runner_up
    if best is None:
        return None
    lead = "Decided by" if s.finished else "Leading by"
    text = _rule_text(s, lead) if s.decision.rule.gated else _means_text(s, lead)
    seeds = getattr(s.spec, "adaptive", None)
    return text if seeds is None else text + "\n\n" + _seeds_text(s, seeds)


def _seeds_text(s: StudyReport, seeds) -> str:
    d = s.decision
    (n_best, n_against), against = d.seeds, d.against
    taken = f"{n_best} seeds of `{d.best.variant}`"
    if against is not None:
        taken += f" and {n_against} of `{against.variant}`"
    if against is None:
        why = "there is nothing to compare it with"
    elif d.difference is not None and d.difference.significant:
        why = "their difference is significant"
    elif s.finished:
        why = "the maximum, without a significant difference"
    else:
        why = "more seeds are training"
    return (f"**Seeds:** adaptive, {seeds.min} to {seeds.max} per variant, {seeds.step} at a "
            f"time; the decision took {taken}: {why}.")


def _rule_text(s: StudyReport, lead: str) -> str:
    return (f"**{lead}:** the significance gate ({s.decision.rule.describe()}) — "
            f"{s.decision.reason}.")


def _means_text(s: StudyReport, lead: str) -> str:
    best, second = s.best, s.runner_up
    if second is None:
        return f"**{lead}:** `{best.variant}` is the only variant with every seed done."
    keys = s.objective.keys
    metric = s.decided_by
    if metric == s.objective.metric:
        return (f"**{lead}:** the mean {metric} ({GOAL_TEXT[s.objective.goal]}): "
                f"`{best.variant}` {_mean(best, metric)} vs runner-up `{second.variant}` "
                f"{_mean(second, metric)}.")
    names = [m for m, _ in keys]
    tied = names if metric is None else names[:names.index(metric)]
    tied_text = ", ".join(f"{m} {_mean(best, m)}" for m in tied)
    pair = f"`{best.variant}` and runner-up `{second.variant}`"
    if metric is None:
        return (f"**{lead}:** study-file order — {pair} tie on every mean ({tied_text}); the "
                "variant listed first wins.")
    goal = dict(keys)[metric]
    return (f"**{lead}:** the tie-break metric {metric} ({GOAL_TEXT[goal]}) — {pair} tie on "
            f"mean {tied_text}; mean {metric} {_mean(best, metric)} vs {_mean(second, metric)}.")


def best_run(s: StudyReport) -> Optional[Cell]:
    """The best variant's done cell with the best objective value (ties: lowest seed)."""
    if s.best is None:
        return None
    metric = s.objective.metric
    done = [c for c in s.cells if c.variant == s.best.variant and c.status == "done"
            and c.metrics.get(metric) is not None and not math.isnan(c.metrics[metric])]
    if not done:
        return None
    return min(done, key=lambda c: (-s.objective.oriented(c.metrics[metric]), c.seed))

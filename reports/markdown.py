"""The report document: a summary of the chain, then one section per study in file order.

Everything here is a pure function of :class:`reports.data.ReportData`: no clock, no randomness,
sorted iteration and fixed float formatting, so the same database gives byte-identical markdown.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from runner.orchestrate.results import VariantResult

from .data import ReportData, StudyData
from .plan import display_file
from .stats import Sample, compare_winner, describe

DASH = "—"


# -- formatting -------------------------------------------------------------------------------
def fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{float(x):.{digits}f}"


def fmt_sample(s: Optional[Sample], digits: int = 3) -> str:
    """"43.125" for one seed, "43.125 ± 0.512" (sample std) for several."""
    if s is None:
        return DASH
    if s.std is None:
        return fmt(s.mean, digits)
    return f"{fmt(s.mean, digits)} ± {fmt(s.std, digits)}"


def fmt_ci(s: Optional[Sample], digits: int = 3) -> str:
    if s is None or s.ci_low is None:
        return DASH
    return f"[{fmt(s.ci_low, digits)}, {fmt(s.ci_high, digits)}]"


def fmt_duration(seconds: Optional[float]) -> str:
    """h:mm:ss from one hour on, else m:ss."""
    if seconds is None or math.isnan(seconds):
        return DASH
    total = int(round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_params(n: Optional[int]) -> str:
    return DASH if n is None else f"{int(n):,}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def fmt_value(v) -> str:
    return json.dumps(v, sort_keys=True)


def cell(text: object) -> str:
    return str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "study"


def first_line(text: Optional[str], limit: int = 240) -> str:
    if not text:
        return "(no error message)"
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    # a traceback's last line names the exception; otherwise the first line is the message
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "no trials"


# -- the chain --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainRow:
    study: StudyData
    base: Optional[StudyData]    # the study the gain is measured from
    gain: Optional[float]


def chain(data: ReportData) -> list[ChainRow]:
    """Each study with its base: ``start_from`` when set, else the previous study in file order."""
    rows, prev = [], None
    for s in data.studies:
        base = data.study(s.spec.start_from) if s.spec.start_from else prev
        gain = None
        if s.best is not None and base is not None and base.best is not None:
            gain = s.best.mean_grader - base.best.mean_grader
        rows.append(ChainRow(s, base, gain))
        prev = s
    return rows


def final_study(data: ReportData) -> Optional[StudyData]:
    decided = [s for s in data.studies if s.best is not None]
    return decided[-1] if decided else None


def section_label(s: StudyData) -> str:
    return f"§{s.spec.section}" if s.spec.section else DASH


def report_grader(s: StudyData, variant: Optional[str]) -> Optional[float]:
    ref = s.spec.report.get(variant) if variant else None
    return ref.grader if ref else None


# -- the document -----------------------------------------------------------------------------
def render_markdown(data: ReportData, figures: dict[str, str], chain_figure: Optional[str]) -> str:
    """``figures``: study name -> relative PNG path; ``chain_figure``: relative path or None."""
    lines: list[str] = []
    plan = data.plan
    lines.append(f"# Ablation report: {plan.name}")
    lines.append("")
    meta = f"Profile `{plan.profile}`"
    if display_file(plan):
        meta += f" · study file `{display_file(plan)}`"
    n = len(data.studies)
    lines.append(meta + f" · {n} stud{'y' if n == 1 else 'ies'}")
    lines.append("")
    lines += _summary(data, chain_figure)
    for i, s in enumerate(data.studies, 1):
        lines.append("")
        lines += _study_section(data, i, s, figures.get(s.spec.name))
    return "\n".join(lines).rstrip("\n") + "\n"


def _summary(data: ReportData, chain_figure: Optional[str]) -> list[str]:
    lines = ["## Summary", ""]
    final = final_study(data)
    if final is None:
        lines.append("No study has a winner yet.")
    else:
        decided = sum(1 for s in data.studies if s.winner is not None)
        ref = report_grader(final, final.best.variant)
        text = (f"**Final model:** `{final.best.variant}` from study `{final.spec.name}` — "
                f"mean grader {fmt(final.best.mean_grader)}")
        if not final.finished:
            text += " (leading; the study is not finished)"
        if ref is not None:
            text += f" (report: {fmt(ref)})"
        first = next(s for s in data.studies if s.best is not None)
        if first is not final:
            text += (f"; baseline `{first.best.variant}` of `{first.spec.name}`: "
                     f"{fmt(first.best.mean_grader)}, total gain "
                     f"{final.best.mean_grader - first.best.mean_grader:+.3f}")
        text += "."
        if decided < len(data.studies):
            text += f" Chain incomplete: {decided} of {len(data.studies)} studies decided."
        lines.append(text)
    lines.append("")
    rows = []
    for i, c in enumerate(chain(data), 1):
        s = c.study
        w = s.best
        label = (f"`{w.variant}`" + ("" if s.finished else " (leading)")) if w else DASH
        rows.append([i, s.spec.name, section_label(s), label,
                     fmt(w.mean_grader) if w else DASH,
                     f"{c.gain:+.3f}" if c.gain is not None else DASH,
                     c.base.spec.name if c.base is not None else "baseline",
                     fmt(report_grader(s, w.variant if w else None))])
    lines += table(["#", "Study", "Report §", "Winner", "Grader (mean)", "Gain",
                    "Gain over", "report Grader"], rows)
    lines.append("")
    if chain_figure:
        lines += [f"![Winner's grader along the chain]({chain_figure})", ""]

    trials_total = sum(len(s.trials) for s in data.studies)
    counts: dict[str, int] = {}
    for s in data.studies:
        for status, n in s.status_counts.items():
            counts[status] = counts.get(status, 0) + n
    runs = data.runs
    n_done = int((runs["status"] == "done").sum()) if not runs.empty else 0
    wall = float(runs["wall_time_s"].fillna(0.0).sum()) if not runs.empty else 0.0
    decided = sum(1 for s in data.studies if s.winner is not None)
    started = sum(1 for s in data.studies if s.trials)
    lines.append(f"- Studies: {len(data.studies)} ({decided} with a winner, {started} started)")
    lines.append(f"- Trials: {trials_total} ({counts_text(counts)})")
    lines.append(f"- Runs trained: {n_done} of {len(runs)} distinct runs "
                 "(a run shared by several studies is trained and counted once)")
    lines.append(f"- Compute: {wall / 3600:.2f} h of training wall time "
                 "(sum over distinct runs and attempts)")
    if data.extra_studies:
        lines.append("- In the database but not in the study file (not reported): "
                     + ", ".join(f"`{n}`" for n in data.extra_studies))
    lines.append("")

    failed = []
    for s in data.studies:
        for r in s.trials:
            if r.get("status") == "failed":
                failed.append([s.spec.name, r["variant"], r["seed"], f"`{r['run_hash']}`",
                               first_line(r.get("error"))])
    lines.append("### Failed trials")
    lines.append("")
    if failed:
        lines += table(["Study", "Variant", "Seed", "Run", "Error"], failed)
    else:
        lines.append("No failed trials.")
    return lines


def _varied_keys(s: StudyData) -> list[str]:
    keys: set[str] = set()
    for ov in s.spec.overrides.values():
        keys.update(ov)
    if not keys:          # e.g. a search study: the sampled overrides live in the database
        for r in s.results:
            keys.update(r.overrides or {})
    return sorted(keys)


def _study_section(data: ReportData, index: int, s: StudyData, figure: Optional[str]) -> list[str]:
    spec = s.spec
    title = spec.title or spec.name
    heading = f"## {index}. {title}"
    if spec.section:
        heading += f" (report §{spec.section})"
    lines = [heading, ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    n_variants = len(s.variant_order())
    info = f"- Study `{spec.name}`"
    if spec.kind:
        info += f", kind `{spec.kind}`"
    info += f", {n_variants} variant{'s' if n_variants != 1 else ''}"
    if spec.seeds:
        info += ", seeds " + ", ".join(str(x) for x in spec.seeds)
    lines.append(info + ".")
    keys = _varied_keys(s)
    if keys:
        lines.append("- Varies: " + ", ".join(f"`{k}`" for k in keys) + ".")
    if spec.start_from:
        base = data.study(spec.start_from)
        if base is not None and base.winner is not None:
            lines.append(f"- Base: the winner of `{spec.start_from}`, `{base.winner.variant}` "
                         f"(mean grader {fmt(base.winner.mean_grader)}).")
        elif base is not None and base.best is not None:
            lines.append(f"- Base: the winner of `{spec.start_from}` (not decided yet; leading: "
                         f"`{base.best.variant}`, mean grader {fmt(base.best.mean_grader)}).")
        else:
            lines.append(f"- Base: the winner of `{spec.start_from}` (not decided yet).")
    else:
        lines.append("- Base: the study file's base configuration.")
    pin = spec.pin
    reason = spec.pin_reason
    if pin is None and s.row and s.row.get("pin_json"):
        pin, reason = json.loads(s.row["pin_json"]), reason or s.row.get("pin_reason")
    if pin:
        text = "- Pinned over the inherited configuration: " + ", ".join(
            f"`{k}={fmt_value(pin[k])}`" for k in sorted(pin))
        if reason:
            text += f" — {str(reason).strip()}"
        lines.append(text + ("" if text.endswith(".") else "."))
    lines.append(f"- Trials: {len(s.trials)} ({counts_text(s.status_counts)}).")
    lines.append("")

    if s.n_done == 0:
        pending = s.status_counts.get("pending", 0) + s.status_counts.get("unsampled", 0) \
            + s.status_counts.get("interrupted", 0)
        running = s.status_counts.get("running", 0)
        if not s.trials:
            lines.append("**No finished trials yet:** the study has no trials in the database "
                         "(not started).")
        else:
            lines.append(f"**No finished trials yet:** {pending} pending, {running} running, "
                         f"{s.status_counts.get('failed', 0)} failed.")
        if figure:
            lines += ["", f"![{title}]({figure})"]
        return lines

    lines += _variant_table(s)
    lines.append("")
    best = _best_run(s)
    if best is not None:
        lines.append(f"**Best run:** `{best['variant']}` seed {best['seed']} — run "
                     f"`{best['run_hash']}`, MLflow run `{best.get('mlflow_run_id') or DASH}` "
                     f"(grader {fmt(best['final_grader'])}).")
    else:
        lines.append("**Best run:** none yet (no variant has all its seeds finished).")
    if not s.finished:
        lines.append("")
        lines.append("_The study is not finished: the leading variant is provisional; the "
                     "scheduler names the winner once every trial is done, failed or pruned._")
    welch = compare_winner(s.results, s.best)
    if welch is not None:
        lines.append("")
        lines.append(f"**Statistics:** Welch's t-test on the final grader, {s.best_label} "
                     f"`{welch.winner}` (n={welch.n_winner}) vs runner-up `{welch.runner_up}` "
                     f"(n={welch.n_runner_up}): t = {fmt(welch.t)}, p = {fmt_p(welch.p)} — "
                     f"{welch.verdict}.")
    if figure:
        lines += ["", f"![{title}]({figure})"]
    return lines


def _n_text(r: Optional[VariantResult]) -> str:
    if r is None:
        return "0"
    n, total = len(r.grader), len(r.statuses)
    if n == total:
        return str(n)
    others: dict[str, int] = {}
    for st in r.statuses:
        if st != "done":
            others[st] = others.get(st, 0) + 1
    return f"{n}/{total} ({counts_text(others)})"


def _variant_table(s: StudyData) -> list[str]:
    ref = s.spec.report
    has_ref = bool(ref)
    ref_params = any(x.params is not None for x in ref.values())
    ref_time = any(x.time is not None for x in ref.values())
    headers = ["Variant", "Depth (SI-logRMSE)", "SemSeg (IoU)", "Grader", "Grader 95% CI",
               "#params", "training time", "n seeds"]
    if has_ref:
        headers += ["report Grader", "report IoU", "report SI-logRMSE"]
        if ref_params:
            headers.append("report #params")
        if ref_time:
            headers.append("report time")
    rows = []
    winner = s.best.variant if s.best else None
    label = s.best_label
    for variant in s.variant_order():
        r = s.result(variant)
        g = describe(r.grader) if r else None
        iou = describe(r.iou) if r else None
        si = describe(r.si_logrmse) if r else None
        t = describe(r.wall_time_s) if r else None
        is_w = variant == winner
        name = f"**{variant}** ({label})" if is_w else variant
        grader = fmt_sample(g)
        row = [name, fmt_sample(si), fmt_sample(iou), f"**{grader}**" if is_w else grader,
               fmt_ci(g), fmt_params(r.params if r else None),
               fmt_duration(t.mean if t else None), _n_text(r)]
        if has_ref:
            x = ref.get(variant)
            row += [fmt(x.grader) if x else DASH, fmt(x.iou) if x else DASH,
                    fmt(x.si_logrmse) if x else DASH]
            if ref_params:
                row.append(fmt_params(x.params) if x else DASH)
            if ref_time:
                row.append(x.time if x and x.time else DASH)
        rows.append(row)
    return table(headers, rows)


def _best_run(s: StudyData) -> Optional[dict]:
    if s.best is None:
        return None
    done = [r for r in s.trials if r["variant"] == s.best.variant and r.get("status") == "done"
            and r.get("final_grader") is not None]
    if not done:
        return None
    return sorted(done, key=lambda r: (-r["final_grader"], r["seed"]))[0]


# -- HTML -------------------------------------------------------------------------------------
def to_html(md: str, title: str) -> str:
    """The markdown as HTML, by a small converter that handles what :func:`render_markdown`
    writes (headings, lists, tables, images); no optional package, so the HTML is the same in
    every environment."""
    body = _own_html(md)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>\n<style>body{{font-family:sans-serif;"
            "max-width:1200px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid "
            "#ccc;padding:2px 6px}img{max-width:100%}</style></head><body>\n"
            f"{body}\n</body></html>\n")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False).replace("\\|", "|")
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip() for p in parts[1:-1]]


def _own_html(md: str) -> str:
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = re.match(r"^(#{1,6}) (.*)$", line)
        img = re.match(r"^!\[(.*)\]\((.*)\)$", line.strip())
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
        elif img:
            out.append(f"<p><img alt=\"{html.escape(img.group(1))}\" "
                       f"src=\"{html.escape(img.group(2))}\"></p>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(block[0])) + "</tr>")
            for row in block[2:]:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(row)) + "</tr>")
            out.append("</table>")
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||- |!\[)", lines[i]):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)

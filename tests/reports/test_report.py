"""The report of the built-in task's metrics, from a hand-built ReportInput (no store needed)."""
from __future__ import annotations

import math
import re
import statistics
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy import stats

from ablations.objective import Objective, pick_winner
from reports import MetricInfo, render_report
from reports.format import fmt_duration, fmt_p

GRADERS = {"sgd": [40.0, 41.0, 42.5], "adam": [43.0, 44.0, 43.5]}
WALL = {"sgd": [600.0, 610.0, 620.0], "adam": [3700.0, 3800.0, 3900.0]}
METRICS = [MetricInfo("grader", "max", "Grader"), MetricInfo("iou", "max", "SemSeg (IoU)"),
           MetricInfo("si_logrmse", "min", "Depth (SI-logRMSE)")]
OBJECTIVE = Objective("grader", "max")


def _hash(study: str, variant: str, seed: int) -> str:
    return f"{study}-{variant}-{seed}".ljust(32, "0")[:32]


def _metrics(grader: float) -> dict:
    return {"grader": grader, "iou": 50.0 + grader / 2, "si_logrmse": 50.0 - grader / 2}


def _done(kit, study, variant, seed, grader, wall, params, epochs=3):
    """A done cell and its epoch rows (the curve rises to the final grader)."""
    h = _hash(study, variant, seed)
    cell = kit.Cell(variant, seed, "done", h, _metrics(grader), tracking_run_id="mlf-" + h[:8],
                    wall_time_s=wall, params=params, overrides={"variant": variant})
    rows = [dict(run_hash=h, variant=variant, seed=seed, epoch=e, step=e * 10,
                 wall_time_s=wall * e / epochs, loss=1.0 / e, **_metrics(grader * e / epochs))
            for e in range(1, epochs + 1)]
    return cell, rows


def make_input(kit, *, report_optimizer=None):
    """Four studies: optimizer (finished, a failed variant), batch (one run still running),
    weighting (pending), later (no trials)."""
    cells, rows = [], []
    for variant in ("sgd", "adam"):
        for i, seed in enumerate((1, 2, 3)):
            c, r = _done(kit, "optimizer", variant, seed, GRADERS[variant][i], WALL[variant][i],
                         26_716_084)
            cells.append(c)
            rows += r
    cells.append(kit.Cell("bad", 1, "failed", _hash("optimizer", "bad", 1), wall_time_s=12.0,
                          error=("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                 "RuntimeError: CUDA out of memory | tried 2 GiB")))
    optimizer = kit.study(kit.spec(
        "optimizer", {"sgd": {"optimizer": "sgd"}, "adam": {"optimizer": "adam"},
                      "bad": {"optimizer": "bad"}},
        title="Optimizer and LR", section="1.1.1", description="SGD vs Adam.", seeds=[1, 2, 3],
        report=report_optimizer or {
            "sgd": {"grader": 44.36, "iou": 70.217, "si_logrmse": 25.857},
            "adam": {"grader": 43.125, "iou": 69.481, "si_logrmse": 26.356}}),
        cells, OBJECTIVE, rows)

    bs4, bs4_rows = _done(kit, "batch", "bs4", 1, 65.0, 4000.0, 26_749_396)
    bs2 = kit.Cell("bs2", 1, "running", _hash("batch", "bs2", 1))
    bs2_rows = [dict(run_hash=bs2.run_hash, variant="bs2", seed=1, epoch=1, step=10,
                     wall_time_s=100.0, grader=20.0, iou=60.0, si_logrmse=40.0, loss=1.0)]
    batch = kit.study(kit.spec(
        "batch", {"bs2": {"batch_size": 2}, "bs4": {"batch_size": 4}}, title="Batch size",
        section="1.1.2", start_from="optimizer",
        pin=kit.Pin({"epochs": 8}, "keep the number of samples constant"),
        report={"bs4": {"grader": 65.527, "iou": 85.313, "si_logrmse": 19.787,
                        "params": 26749396, "time": "6:45"}}),
        [bs4, bs2], OBJECTIVE, bs4_rows + bs2_rows)

    weighting = kit.study(kit.spec("weighting", {"w37": {}, "w64": {}}, title="Task weighting",
                                   section="1.1.3", start_from="batch"),
                          [kit.Cell(v, 1, "pending", _hash("weighting", v, 1))
                           for v in ("w37", "w64")], OBJECTIVE)
    later = kit.study(kit.spec("later", {"x": {}}, title="Not started", section="2",
                               start_from="weighting"), [], OBJECTIVE)
    return kit.report_input([optimizer, batch, weighting, later], METRICS, OBJECTIVE,
                            extra_studies=["old_study"])


@pytest.fixture()
def data(kit):
    return make_input(kit)


@pytest.fixture()
def rendered(data):
    files = render_report(data, jobs=1)
    return data, files, files["report.md"].decode("utf-8")


def _row(md: str, variant_cell: str) -> list[str]:
    for line in md.splitlines():
        if line.startswith("| ") and line.split(" | ")[0] == "| " + variant_cell:
            return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"no row {variant_cell!r}")


def _header(md: str, after: str) -> list[str]:
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(after))
    head = next(ln for ln in lines[start:] if ln.startswith("| Variant"))
    return [c.strip() for c in head.split("|")[1:-1]]


def _ci(xs):
    m, s = statistics.mean(xs), statistics.stdev(xs)
    half = stats.t.ppf(0.975, len(xs) - 1) * s / math.sqrt(len(xs))
    return m, s, m - half, m + half


def test_table_values_mean_std_ci_and_report_numbers(rendered):
    _, _, md = rendered
    header = _header(md, "## 1. Optimizer and LR")
    # the objective first (with its CI), then the other declared metrics in declared order
    assert header[:8] == ["Variant", "Grader", "Grader 95% CI", "SemSeg (IoU)",
                          "Depth (SI-logRMSE)", "#params", "training time", "n seeds"]
    assert header[8:] == ["report Grader", "report SemSeg (IoU)", "report Depth (SI-logRMSE)"]
    row = dict(zip(header, _row(md, "**adam** (winner)")))
    g = GRADERS["adam"]
    m, s, lo, hi = _ci(g)
    assert row["Grader"] == f"**{m:.3f} ± {s:.3f}**"
    assert row["Grader 95% CI"] == f"[{lo:.3f}, {hi:.3f}]"
    iou = [50 + x / 2 for x in g]
    si = [50 - x / 2 for x in g]
    assert row["SemSeg (IoU)"] == f"{statistics.mean(iou):.3f} ± {statistics.stdev(iou):.3f}"
    assert row["Depth (SI-logRMSE)"] == f"{statistics.mean(si):.3f} ± {statistics.stdev(si):.3f}"
    assert row["#params"] == "26,716,084"
    assert row["training time"] == "1:03:20"          # mean 3800 s
    assert row["n seeds"] == "3"
    assert (row["report Grader"], row["report SemSeg (IoU)"], row["report Depth (SI-logRMSE)"]) \
        == ("43.125", "69.481", "26.356")
    sgd = dict(zip(header, _row(md, "sgd")))
    assert sgd["training time"] == "10:10" and sgd["report Grader"] == "44.360"
    bad = dict(zip(header, _row(md, "bad")))
    assert bad["Grader"] == "—" and bad["n seeds"] == "0/1 (failed 1)"
    assert bad["report Grader"] == "—"


def test_report_params_and_time_columns_and_single_seed(rendered):
    _, _, md = rendered
    header = _header(md, "## 2. Batch size")
    assert header[-2:] == ["report #params", "report time"]
    row = dict(zip(header, _row(md, "**bs4** (leading)")))   # bs2 still running
    assert row["Grader"] == "**65.000**" and row["Grader 95% CI"] == "—"
    assert row["report #params"] == "26,749,396" and row["report time"] == "6:45"
    assert row["training time"] == "1:06:40"
    running = dict(zip(header, _row(md, "bs2")))
    assert running["n seeds"] == "0/1 (running 1)"


def test_report_columns_only_for_the_numbers_given(kit):
    # report numbers for the objective only: one report column, no #params/time columns
    data = make_input(kit, report_optimizer={"adam": {"grader": 43.125}})
    md = render_report(data, jobs=1)["report.md"].decode("utf-8")
    header = _header(md, "## 1. Optimizer and LR")
    assert header[8:] == ["report Grader"]
    assert dict(zip(header, _row(md, "sgd")))["report Grader"] == "—"


def test_winner_is_pick_winners_choice(rendered):
    data, _, md = rendered
    for study, heading, label in (("optimizer", "## 1.", "winner"), ("batch", "## 2.", "leading")):
        winner = pick_winner(data.study(study).results, OBJECTIVE)
        section = md.split(heading, 1)[1].split("\n## ", 1)[0]
        marked = re.findall(r"^\| \*\*(\S+)\*\* \((\w+)\)", section, flags=re.M)
        assert marked == [(winner.variant, label)]
    assert "_The study is not finished" in md.split("## 2.", 1)[1].split("\n## ", 1)[0]
    assert "_The study is not finished" not in md.split("## 1.", 1)[1].split("\n## ", 1)[0]


def test_the_deciding_metric_is_stated(rendered):
    _, _, md = rendered
    assert ("**Decided by:** the mean grader (higher is better): `adam` 43.500 vs runner-up "
            "`sgd` 41.167.") in md
    batch = md.split("## 2.", 1)[1].split("\n## ", 1)[0]
    assert "**Leading by:** `bs4` is the only variant with every seed done." in batch


def test_study_order_sections_and_base_description(rendered):
    _, _, md = rendered
    headings = re.findall(r"^## (.*)$", md, flags=re.M)
    assert headings == ["Summary", "1. Optimizer and LR (report §1.1.1)",
                        "2. Batch size (report §1.1.2)", "3. Task weighting (report §1.1.3)",
                        "4. Not started (report §2)"]
    assert "- Base: the winner of `optimizer`, `adam` (mean grader 43.500)." in md
    assert "- Pinned over the inherited configuration: `epochs=8` — keep the number of samples " \
           "constant." in md
    assert "- Varies: `optimizer`." in md
    assert ("- Base: the winner of `batch` (not decided yet; leading: `bs4`, mean grader 65.000)."
            in md)
    assert "study file `studies.yaml`" in md and "task `mtl`" in md
    assert "Objective: grader (max)." in md
    assert "- In the database but not in the study file (not reported): `old_study`" in md


def test_summary_chain_totals_and_failed_trials(rendered):
    _, _, md = rendered
    summary = md.split("## 1.", 1)[0]
    assert "| # | Study | Report § | Winner | Grader (mean) | Gain | Gain over | report Grader |" \
        in summary
    assert "| 1 | optimizer | §1.1.1 | `adam` | 43.500 | — | baseline | 43.125 |" in summary
    assert "| 2 | batch | §1.1.2 | `bs4` (leading) | 65.000 | +21.500 | optimizer | 65.527 |" \
        in summary
    assert "| 3 | weighting | §1.1.3 | — | — | — | batch | — |" in summary
    assert ("**Final model:** `bs4` from study `batch` — mean grader 65.000 (leading; the study "
            "is not finished) (report: 65.527); baseline `adam` of `optimizer`: 43.500, total "
            "gain +21.500. Chain incomplete: 1 of 4 studies decided.") in summary
    assert "- Studies: 4 (1 with a winner, 3 started)" in summary
    assert "- Trials: 11 (done 7, failed 1, pending 2, running 1)" in summary
    assert "- Runs trained: 7 of 11 distinct runs" in summary
    wall = sum(WALL["sgd"]) + sum(WALL["adam"]) + 12.0 + 4000.0
    assert f"- Compute: {wall / 3600:.2f} h" in summary
    # the failed trial with its reason (the traceback's last line, pipes escaped)
    assert (f"| optimizer | bad | 1 | `{_hash('optimizer', 'bad', 1)}` | "
            "RuntimeError: CUDA out of memory \\| tried 2 GiB |") in summary
    assert "![Winner's grader along the chain](figures/chain.png)" in summary


def test_best_run_and_welch_statistics(rendered):
    _, _, md = rendered
    h = _hash("optimizer", "adam", 2)
    assert (f"**Best run:** `adam` seed 2 — run `{h}`, MLflow run `mlf-{h[:8]}` "
            "(grader 44.000).") in md
    res = stats.ttest_ind(GRADERS["adam"], GRADERS["sgd"], equal_var=False)
    verdict = "beyond seed noise (p < 0.05)" if res.pvalue < 0.05 else "within seed noise"
    assert (f"**Statistics:** Welch's t-test on the final grader, winner `adam` (n=3) vs "
            f"runner-up `sgd` (n=3): t = {res.statistic:.3f}, p = {fmt_p(res.pvalue)} — "
            f"{verdict}.") in md
    assert fmt_p(res.pvalue) == f"{res.pvalue:.4f}"
    # one seed per variant: no test
    assert "Statistics" not in md.split("## 2.", 1)[1]


def test_no_finished_trials_sections(rendered):
    _, _, md = rendered
    weighting = md.split("## 3.", 1)[1].split("\n## ", 1)[0]
    assert "**No finished trials yet:** 2 pending, 0 running, 0 failed." in weighting
    assert "| Variant" not in weighting
    later = md.split("## 4.", 1)[1]
    assert "**No finished trials yet:** the study has no trials in the database" in later


def test_relative_figures_exist(rendered):
    _, files, md = rendered
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert images == ["figures/chain.png", "figures/optimizer.png", "figures/batch.png"]
    for rel in images:
        assert not Path(rel).is_absolute()
        assert files[rel][:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(files) == sorted(images + ["report.md"])


def test_deterministic_output_and_no_file_written(data, tmp_path, monkeypatch):
    import reports.figures as figures
    pools = []

    class Spy(figures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(figures, "ProcessPoolExecutor", Spy)
    monkeypatch.setattr(figures, "MIN_PARALLEL_TASKS", 2)
    monkeypatch.chdir(tmp_path)
    a = render_report(data, jobs=1)
    assert pools == []
    b = render_report(data, jobs=3)                                  # forked workers
    can_fork = threading.active_count() == 1 and sys.platform.startswith("linux")
    assert pools == ([3] if can_fork else [])  # with other threads alive it must not fork
    assert render_report(data, jobs=1) == a                          # rendered again
    assert sorted(a) == sorted(b)
    for rel in a:                                                     # report.md and PNGs
        assert a[rel] == b[rel], rel
    assert list(tmp_path.iterdir()) == []                             # pure: writes nothing


def test_html(data):
    files = render_report(data, fmt="html", jobs=1)
    html = files["report.html"].decode("utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<title>Ablation report: demo</title>" in html
    assert html.count("<table>") == 5              # verdicts, summary, failed trials, 2 variant tables
    assert "<th>Grader 95% CI</th>" in html
    assert "<td>RuntimeError: CUDA out of memory | tried 2 GiB</td>" in html
    assert 'src="figures/chain.png"' in html and 'src="figures/optimizer.png"' in html
    assert "<strong>43.500 ± 0.500</strong>" in html
    assert files["report.md"] == render_report(data, jobs=1)["report.md"]
    with pytest.raises(ValueError):
        render_report(data, fmt="pdf")


def test_html_escapes_user_text(kit):
    spec = kit.spec("s", {"a": {}}, description="Expected <class 'int'> <script>x</script>")
    cell = kit.Cell("a", 1, "failed", "h" * 32, error="TypeError: got <b>bold</b>")
    data = kit.report_input([kit.study(spec, [cell], OBJECTIVE)], METRICS, OBJECTIVE)
    html = render_report(data, fmt="html", jobs=1)["report.html"].decode("utf-8")
    assert "&lt;class 'int'&gt;" in html and "&lt;script&gt;" in html and "<script>" not in html
    assert "got &lt;b&gt;bold&lt;/b&gt;" in html


def test_spec_and_report_numbers_by_attributes_only(kit):
    """A study spec and report numbers are read by attribute (the study file's ReportNumbers model
    as well as a mapping); a pin recorded with the study shows when the spec has none."""
    spec = SimpleNamespace(
        name="branched", title="Branched", section="2", description="d", start_from=None,
        pin=None, seeds=[1], kind="variants",
        variants=[SimpleNamespace(name="joint", overrides={"arch": "joint"}),
                  SimpleNamespace(name="branched", overrides={"arch": "branched"})],
        report={"branched": SimpleNamespace(grader=67.524, iou=85.623, si_logrmse=18.099,
                                            params=32142356, time="9:00")})
    cells = [kit.Cell("joint", 1, "done", "j" * 32, _metrics(60.0), params=1),
             kit.Cell("branched", 1, "done", "b" * 32, _metrics(67.0), params=2)]
    data = kit.report_input([kit.study(spec, cells, OBJECTIVE,
                                       pin_from_store=kit.Pin({"epochs": 16}, "why"))],
                            METRICS, OBJECTIVE)
    md = render_report(data, jobs=1)["report.md"].decode("utf-8")
    header = _header(md, "## 1. Branched")
    row = dict(zip(header, _row(md, "**branched** (winner)")))
    assert (row["report Grader"], row["report SemSeg (IoU)"], row["report Depth (SI-logRMSE)"],
            row["report #params"], row["report time"]) == \
        ("67.524", "85.623", "18.099", "32,142,356", "9:00")
    assert "- Pinned over the inherited configuration: `epochs=16` — why." in md
    assert "- Varies: `arch`." in md


def test_duration_format():
    assert fmt_duration(59.6) == "1:00"
    assert fmt_duration(600) == "10:00"
    assert fmt_duration(3599.4) == "59:59"
    assert fmt_duration(3600) == "1:00:00"
    assert fmt_duration(61_565) == "17:06:05"
    assert fmt_duration(None) == "—"

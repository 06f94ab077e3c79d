"""The report from a small hand-built result database (no study-file loader needed)."""
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

from reports import (RefNumbers, ReportPlan, ReportStudy, load_report_data, plan_from_study_plan,
                     render_report)
from reports.markdown import fmt_duration, fmt_p
from runner.orchestrate.results import pick_winner, summarise
from runner.store import ResultStore, sqlite_url

PLAN, PROFILE = "demo", "test"
GRADERS = {"sgd": [40.0, 41.0, 42.5], "adam": [43.0, 44.0, 43.5]}
WALL = {"sgd": [600.0, 610.0, 620.0], "adam": [3700.0, 3800.0, 3900.0]}


def _hash(study: str, variant: str, seed: int) -> str:
    return f"{study}-{variant}-{seed}".ljust(32, "0")[:32]


def _finish(store: ResultStore, h: str, grader: float, wall: float, params: int, epochs: int = 3):
    iou = 50.0 + grader / 2
    si = 50.0 - grader / 2
    store.update_run(h, status="done", final_grader=grader, final_iou=iou, final_si_logrmse=si,
                     params=params, wall_time_s=wall, mlflow_run_id="mlf-" + h[:8],
                     epochs_done=epochs, step=epochs * 10)
    for e in range(1, epochs + 1):
        g = grader * e / epochs
        store.record_epoch(h, dict(epoch=e, step=e * 10, wall_time_s=wall * e / epochs, grader=g,
                                   iou=50 + g / 2, si_logrmse=50 - g / 2, loss=1.0 / e, lr=1e-3))


def _add(store, sid, study, variant, seed):
    h = _hash(study, variant, seed)
    store.add_trial(sid, variant, seed, config={"study": study, "variant": variant, "seed": seed},
                    config_hash=h, overrides={"variant": variant})
    return h


def make_plan() -> ReportPlan:
    return ReportPlan(name=PLAN, profile=PROFILE, file="/somewhere/studies.yaml", studies=[
        ReportStudy(name="optimizer", title="Optimizer and LR", section="1.1.1",
                    description="SGD vs Adam.", seeds=[1, 2, 3], kind="variants",
                    variants=["sgd", "adam", "bad"],
                    overrides={"sgd": {"optimizer": "sgd"}, "adam": {"optimizer": "adam"},
                               "bad": {"optimizer": "bad"}},
                    report={"sgd": RefNumbers(44.36, 70.217, 25.857),
                            "adam": RefNumbers(43.125, 69.481, 26.356)}),
        ReportStudy(name="batch", title="Batch size", section="1.1.2", start_from="optimizer",
                    pin={"epochs": 8}, pin_reason="keep the number of samples constant",
                    seeds=[1], kind="variants", variants=["bs2", "bs4"],
                    overrides={"bs2": {"batch_size": 2}, "bs4": {"batch_size": 4}},
                    report={"bs4": RefNumbers(65.527, 85.313, 19.787, 26749396, "6:45")}),
        ReportStudy(name="weighting", title="Task weighting", section="1.1.3",
                    start_from="batch", seeds=[1], kind="variants", variants=["w37", "w64"]),
        ReportStudy(name="later", title="Not started", section="2", start_from="weighting",
                    seeds=[1], kind="variants", variants=["x"]),
    ])


@pytest.fixture()
def db(tmp_path):
    store = ResultStore(sqlite_url(tmp_path / "ablate.db"))
    common = dict(plan=PLAN, profile=PROFILE, kind="variants", base_config={"lr": 0.01})
    s1 = store.ensure_study(name="optimizer", position=0, start_from=None, pin=None,
                            pin_reason=None, **common)
    for variant in ("sgd", "adam"):
        for i, seed in enumerate((1, 2, 3)):
            h = _add(store, s1, "optimizer", variant, seed)
            _finish(store, h, GRADERS[variant][i], WALL[variant][i], 26_716_084)
    h = _add(store, s1, "optimizer", "bad", 1)
    store.update_run(h, status="failed", wall_time_s=12.0, error=(
        "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
        "RuntimeError: CUDA out of memory | tried 2 GiB"))

    s2 = store.ensure_study(name="batch", position=1, start_from="optimizer", pin={"epochs": 8},
                            pin_reason="keep the number of samples constant", **common)
    _finish(store, _add(store, s2, "batch", "bs4", 1), 65.0, 4000.0, 26_749_396)
    h = _add(store, s2, "batch", "bs2", 1)
    store.update_run(h, status="running", epochs_done=1)
    store.record_epoch(h, dict(epoch=1, step=10, wall_time_s=100.0, grader=20.0, iou=60.0,
                               si_logrmse=40.0, loss=1.0, lr=1e-3))

    s3 = store.ensure_study(name="weighting", position=2, start_from="batch", pin=None,
                            pin_reason=None, **common)
    _add(store, s3, "weighting", "w37", 1)
    _add(store, s3, "weighting", "w64", 1)
    # a study of another plan must not leak into this report
    other = store.ensure_study(name="optimizer", position=0, start_from=None, pin=None,
                               pin_reason=None, plan="other", profile=PROFILE, kind="variants",
                               base_config={})
    _finish(store, _add(store, other, "other", "zzz", 1), 99.0, 1.0, 1)
    yield store, {"optimizer": s1, "batch": s2, "weighting": s3}
    store.close()


@pytest.fixture()
def rendered(db, tmp_path):
    store, ids = db
    out = tmp_path / "report"
    path = render_report(store, make_plan(), out, jobs=1)
    return store, ids, out, path.read_text(encoding="utf-8")


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
    _, _, _, md = rendered
    header = _header(md, "## 1. Optimizer and LR")
    assert header[:8] == ["Variant", "Depth (SI-logRMSE)", "SemSeg (IoU)", "Grader",
                          "Grader 95% CI", "#params", "training time", "n seeds"]
    assert header[8:] == ["report Grader", "report IoU", "report SI-logRMSE"]
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
    assert (row["report Grader"], row["report IoU"], row["report SI-logRMSE"]) == \
        ("43.125", "69.481", "26.356")
    sgd = dict(zip(header, _row(md, "sgd")))
    assert sgd["training time"] == "10:10" and sgd["report Grader"] == "44.360"
    bad = dict(zip(header, _row(md, "bad")))
    assert bad["Grader"] == "—" and bad["n seeds"] == "0/1 (failed 1)"
    assert bad["report Grader"] == "—"


def test_report_params_and_time_columns_and_single_seed(rendered):
    _, _, _, md = rendered
    header = _header(md, "## 2. Batch size")
    assert header[-2:] == ["report #params", "report time"]
    row = dict(zip(header, _row(md, "**bs4** (leading)")))   # bs2 still running
    assert row["Grader"] == "**65.000**" and row["Grader 95% CI"] == "—"
    assert row["report #params"] == "26,749,396" and row["report time"] == "6:45"
    assert row["training time"] == "1:06:40"
    running = dict(zip(header, _row(md, "bs2")))
    assert running["n seeds"] == "0/1 (running 1)"


def test_winner_is_pick_winners_choice(rendered):
    store, ids, _, md = rendered
    for study, heading, label in (("optimizer", "## 1.", "winner"), ("batch", "## 2.", "leading")):
        winner = pick_winner(summarise(store.study_trials(ids[study])))
        section = md.split(heading, 1)[1].split("\n## ", 1)[0]
        marked = re.findall(r"^\| \*\*(\S+)\*\* \((\w+)\)", section, flags=re.M)
        assert marked == [(winner.variant, label)]
    assert "_The study is not finished" in md.split("## 2.", 1)[1].split("\n## ", 1)[0]
    assert "_The study is not finished" not in md.split("## 1.", 1)[1].split("\n## ", 1)[0]


def test_study_order_sections_and_base_description(rendered):
    _, _, _, md = rendered
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
    assert "study file `studies.yaml`" in md and "/somewhere" not in md
    assert "zzz" not in md                               # other plan's study is not read


def test_summary_chain_totals_and_failed_trials(rendered):
    _, _, _, md = rendered
    summary = md.split("## 1.", 1)[0]
    assert "| 1 | optimizer | §1.1.1 | `adam` | 43.500 | — | baseline | 43.125 |" in summary
    assert "| 2 | batch | §1.1.2 | `bs4` (leading) | 65.000 | +21.500 | optimizer | 65.527 |" \
        in summary
    assert "| 3 | weighting | §1.1.3 | — | — | — | batch | — |" in summary
    assert ("**Final model:** `bs4` from study `batch` — mean grader 65.000 (leading; the study "
            "is not finished) (report: 65.527)") in summary
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
    _, _, _, md = rendered
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
    _, _, _, md = rendered
    weighting = md.split("## 3.", 1)[1].split("\n## ", 1)[0]
    assert "**No finished trials yet:** 2 pending, 0 running, 0 failed." in weighting
    assert "| Variant" not in weighting
    later = md.split("## 4.", 1)[1]
    assert "**No finished trials yet:** the study has no trials in the database" in later


def test_relative_figures_exist(rendered):
    _, _, out, md = rendered
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert images == ["figures/chain.png", "figures/optimizer.png", "figures/batch.png"]
    for rel in images:
        assert not Path(rel).is_absolute()
        data = (out / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp"))


def test_deterministic_output(db, tmp_path, monkeypatch):
    import reports.figures as figures
    store, _ = db
    pools = []

    class Spy(figures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(figures, "ProcessPoolExecutor", Spy)
    monkeypatch.setattr(figures, "MIN_PARALLEL_TASKS", 2)
    a = render_report(store, make_plan(), tmp_path / "a", jobs=1).parent
    assert pools == []
    b = render_report(store, make_plan(), tmp_path / "b", jobs=3).parent   # forked workers
    can_fork = threading.active_count() == 1 and sys.platform.startswith("linux")
    assert pools == ([3] if can_fork else [])  # with other threads alive it must not fork
    render_report(store, make_plan(), a, jobs=1)                           # re-render in place
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert (a / "report.md").read_bytes() == (b / "report.md").read_bytes()
    for rel in files_a:                                   # PNGs too
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_html(db, tmp_path):
    store, _ = db
    render_report(store, make_plan(), tmp_path, fmt="html", jobs=1)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<table>" in html
    assert 'src="figures/chain.png"' in html
    with pytest.raises(ValueError):
        render_report(store, make_plan(), tmp_path, fmt="pdf")


def test_plan_from_study_plan_uses_attributes_only():
    spec = SimpleNamespace(
        name="branched", title="Branched", section="2", description="d", start_from="aspp",
        pin=SimpleNamespace(set={"epochs": 16}, reason="why"), seeds=[1, 2], kind="variants",
        variants=[SimpleNamespace(name="joint", overrides={"arch": "joint"}),
                  SimpleNamespace(name="branched", overrides={"arch": "branched"})],
        report={"branched": SimpleNamespace(grader=67.524, iou=85.623, si_logrmse=18.099,
                                            params=32142356, time="9:00")})
    plan = plan_from_study_plan(SimpleNamespace(name="p", profile=SimpleNamespace(name="full"),
                                                file="x.yaml", studies=[spec]))
    assert plan.name == "p" and plan.profile == "full" and plan.file == "x.yaml"
    s = plan.studies[0]
    assert s.variants == ["joint", "branched"] and s.pin == {"epochs": 16} and s.pin_reason == "why"
    assert s.report["branched"] == RefNumbers(67.524, 85.623, 18.099, 32142356, "9:00")
    assert plan_from_study_plan(plan) is plan


def test_load_report_data_reads_each_table_once(db):
    store, _ = db
    statements = []
    from sqlalchemy import event

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        data = load_report_data(store, make_plan())
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) == 4                 # studies, trials, runs, epoch_metrics
    assert [s.spec.name for s in data.studies] == ["optimizer", "batch", "weighting", "later"]
    assert len(data.study("optimizer").curves) == 6 * 3


def test_duration_format():
    assert fmt_duration(59.6) == "1:00"
    assert fmt_duration(600) == "10:00"
    assert fmt_duration(3599.4) == "59:59"
    assert fmt_duration(3600) == "1:00:00"
    assert fmt_duration(61_565) == "17:06:05"
    assert fmt_duration(None) == "—"


def test_log_report_to_mlflow(rendered, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from reports import log_report_to_mlflow
    _, _, out, md = rendered
    uri = sqlite_url(tmp_path / "mlflow.db")
    art = (tmp_path / "mlartifacts").as_uri()
    run_id = log_report_to_mlflow(out, uri, "demo-exp", artifact_location=art)
    again = log_report_to_mlflow(out, uri, "demo-exp", artifact_location=art)
    assert again == run_id                       # the report run is reused
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.tags["ablate.kind"] == "report"
    assert run.info.run_name == "report"
    exp = client.get_experiment_by_name("demo-exp")
    assert len(client.search_runs([exp.experiment_id])) == 1
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "figures"} <= names
    figs = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/chain.png" in figs and "figures/optimizer.png" in figs
    local = client.download_artifacts(run_id, "report.md", str(tmp_path / "dl"))
    assert Path(local).read_text(encoding="utf-8") == md

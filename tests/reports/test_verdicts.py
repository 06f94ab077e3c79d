"""A verdict on each claim of the report (reports.verdicts), and the summary that opens with them."""
from __future__ import annotations

import pytest

from ablations.objective import Objective
from reports import MetricInfo, render_report
from reports.verdicts import claim, verdict_lines

METRICS = [MetricInfo("acc", "max", "Accuracy"), MetricInfo("loss", "min", "Loss"),
           MetricInfo("raw", "max", "Raw")]
ACC = Objective("acc", "max")


def _cells(kit, variant: str, accs: list[float], losses=None):
    losses = losses or [1.0 - a / 100 for a in accs]
    return [kit.Cell(variant, seed, "done", f"{variant}-{seed}".ljust(32, "0"),
                     {"acc": a, "loss": l, "raw": a - 50}, wall_time_s=1.0)
            for seed, (a, l) in enumerate(zip(accs, losses))]


def _study(kit, name: str, ours: dict[str, list[float]], report: dict, objective=ACC):
    cells = [c for v, accs in ours.items() for c in _cells(kit, v, accs)]
    return kit.study(kit.spec(name, {v: {} for v in ours}, seeds=[0], report=report), cells, objective)


def test_reproduced_contradicted_and_inconclusive(kit):
    reproduced = _study(kit, "r", {"a": [80.0, 81.0, 80.5], "b": [70.0, 71.0, 70.2]},
                        {"a": {"acc": 75.0}, "b": {"acc": 74.0}})
    contradicted = _study(kit, "c", {"a": [60.0, 61.0, 60.5], "b": [70.0, 71.0, 70.2]},
                          {"a": {"acc": 75.0}, "b": {"acc": 74.0}})
    noise = _study(kit, "n", {"a": [70.0, 72.0, 69.0], "b": [71.0, 69.5, 70.2]},
                   {"a": {"acc": 75.0}, "b": {"acc": 74.0}})
    one_seed = _study(kit, "one", {"a": [90.0], "b": [10.0]}, {"a": {"acc": 75.0}, "b": {"acc": 74.0}})
    data = kit.report_input([reproduced, contradicted, noise, one_seed], METRICS, ACC)
    got = {s.spec.name: claim(data, s) for s in data.studies}
    assert {k: c.verdict for k, c in got.items()} == {
        "r": "reproduced", "c": "contradicted", "n": "inconclusive", "one": "inconclusive"}
    assert (got["r"].winner, got["r"].runner_up, got["r"].report_diff) == ("a", "b", 1.0)
    assert got["c"].ours.diff < 0 and got["c"].ours.significant
    assert got["n"].why == "not significant at alpha 0.05"
    # one seed a side: a difference of 80 points is still no evidence (no variance estimate)
    assert got["one"].ours.diff == 80.0 and "too few seeds (1 vs 1" in got["one"].why

    md = render_report(data, jobs=1)["report.md"].decode("utf-8")
    summary = md.split("## 1.", 1)[0]
    assert summary.startswith("# Ablation report")
    assert summary.split("## Summary\n\n", 1)[1].startswith(
        "The report's claims: 1 reproduced, 1 contradicted, 2 inconclusive.\n")
    assert ("| Study | Metric | Report's claim | Report's difference | Our difference | Our 95% CI "
            "| p | Seeds | Verdict |") in summary
    assert "| one | Accuracy | `a` over `b` | +1.000 | +80.000 | — | — | 1 vs 1 | **inconclusive**: " \
           "too few seeds (1 vs 1; a test needs 2 per variant) |" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| r |"))
    d = got["r"].ours
    assert f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]" in row and "**reproduced**" in row


def test_the_claim_uses_the_metric_the_report_gives_and_the_variants_we_ran(kit):
    """A study decided on ``raw`` while the report printed ``loss`` (lower is better): the claim
    is on loss; variants the report has numbers for but this profile does not run are left out;
    a study with one reported variant makes no claim."""
    raw = Objective("raw", "max")
    cells = (_cells(kit, "a", [80.0, 81.0], losses=[0.30, 0.31])
             + _cells(kit, "b", [70.0, 71.0], losses=[0.20, 0.21]))
    s = kit.study(kit.spec("w", {"a": {}, "b": {}}, seeds=[0, 1],
                           report={"a": {"loss": 0.25}, "b": {"loss": 0.26}, "gone": {"loss": 0.1}}),
                  cells, raw)
    lone = _study(kit, "lone", {"a": [1.0, 2.0], "b": [3.0, 4.0]}, {"a": {"acc": 50.0}})
    data = kit.report_input([s, lone], METRICS, raw)
    c = claim(data, s)
    assert c.metric.name == "loss" and c.metric.goal == "min"
    assert (c.winner, c.runner_up) == ("a", "b")            # not `gone`, which we do not run
    assert c.report_diff == pytest.approx(0.01)
    assert c.ours.diff < 0 and c.verdict == "contradicted"  # our `a` has the higher loss
    assert claim(data, lone) is None
    lines = verdict_lines(data)
    assert lines[0] == "The report's claims: 0 reproduced, 1 contradicted, 0 inconclusive."
    assert "No claim in `lone`: the report gives numbers for only one of the variants run here " \
           "(or its two best tie)." in lines


def test_no_report_numbers_no_verdicts(kit):
    s = _study(kit, "s", {"a": [1.0, 2.0], "b": [3.0, 4.0]}, {})
    data = kit.report_input([s], METRICS, ACC)
    assert verdict_lines(data) == []
    assert "The report's claims" not in render_report(data, jobs=1)["report.md"].decode("utf-8")

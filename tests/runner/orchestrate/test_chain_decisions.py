"""The chain's decisions on a task of controlled noise, through `ablate run`, `status` and `report`:
the significance gate (``advance: {when: significant}``) and adaptive seeds (``seeds: {min, max}``).

The fake task (tests/support/fake_task.py) scores ``10 + 1000*lr + momentum - 1000*weight_decay +
weight + 0.01*seed`` plus seeded Gaussian noise (``noise: 1.0``), the same draw for the same seed
and config. ``base`` (momentum 0.4, weight 1.1) and ``same`` (momentum 0.8, weight 0.7) have the
same true score, so they differ by noise only; with these seeds ``same``'s sample mean is the
higher at 2, 4 and 6 seeds (the best-mean rule advances to it) and never significantly (p 0.97,
0.49, 0.31). ``weight`` 4.1 (+3) and 11.1 (+10) are truly better.
"""
from __future__ import annotations

from pathlib import Path

from ablations.stats import difference
from runner.orchestrate.session import Session
from runner.orchestrate.walk import materialize, studies_in_scope, survey
from tests.support.cli import invoke_cli

HEAD = """\
name: decisions
task: tests.support.fake_task
defaults: {noise: 1.0, momentum: 0.4, weight: 1.1}
"""
NOISE_PAIR = """\
    variants:
      - {name: base, set: {}}
      - {name: same, set: {momentum: 0.8, weight: 0.7}}
"""


def _run(tmp_path: Path, text: str, capsys) -> tuple[Path, Path, str]:
    """``ablate run`` then ``ablate status`` on ``text``: (study file, workspace, status output)."""
    study_file, ws = tmp_path / "studies.yaml", tmp_path / "ws"
    study_file.write_text(text)
    code, _, _ = invoke_cli("run", study_file, "--workspace", ws, "--tracking-uri", "none",
                            "--no-progress", capsys=capsys)
    assert code == 0
    code, out, _ = invoke_cli("status", study_file, "--workspace", ws, capsys=capsys)
    assert code == 0
    return study_file, ws, out


def _states(study_file: Path, ws: Path) -> dict:
    session = Session.open(study_file, workspace=ws, read_only=True)
    return {s.name: s for s in survey(session, studies_in_scope(session, None))}


def _report(study_file: Path, ws: Path, capsys) -> str:
    code, _, _ = invoke_cli("report", study_file, "--workspace", ws, "--no-log", capsys=capsys)
    assert code == 0
    return (ws / "report" / "report.md").read_text()


GATED = HEAD + """\
advance: {when: significant}
studies:
  - name: noise
    start_from: none
    seeds: 4
""" + NOISE_PAIR + """\
  - name: clear
    start_from: previous
    seeds: 4
    variants:
      - {name: base, set: {}}
      - {name: better, set: {weight: 4.1}}
  - name: after
    start_from: previous
    variants:
      - {name: inherited, set: {}}
"""


def test_the_gate_keeps_the_incumbent_on_noise_and_advances_on_a_true_difference(tmp_path, capsys):
    study_file, ws, status = _run(tmp_path, GATED, capsys)
    states = _states(study_file, ws)

    noise = states["noise"]
    assert noise.incumbent == "base"                                # the inherited configuration
    assert noise.decision.best.variant == "same"                    # the better mean, by noise
    assert noise.winner.variant == "base" and noise.decision.kept_incumbent
    assert not noise.decision.difference.significant
    assert (states["clear"].base["momentum"], states["clear"].base["weight"]) == (0.4, 1.1)

    clear = states["clear"]
    assert clear.winner.variant == "better" and not clear.decision.kept_incumbent
    assert clear.decision.difference.significant and clear.decision.difference.diff > 0
    assert states["after"].base["weight"] == 4.1                    # the chain advanced

    # status says which rule decided and why the chain kept the incumbent
    assert "kept incumbent: not significant" in status and "beats incumbent (p = " in status
    assert ("decision noise (advances when significant at alpha 0.05): `same` leads the incumbent "
            "`base` by +") in status
    assert "not significant at alpha 0.05; the chain keeps `base`" in status
    assert "significant at alpha 0.05; the chain advances to `better`" in status

    report = _report(study_file, ws, capsys)
    assert "| 1 | noise | — | `base` (kept incumbent) |" in report
    assert "| 2 | clear | — | `better` |" in report
    assert "- The chain advances when significant at alpha 0.05 over the incumbent `base`." in report
    assert ("**Decided by:** the significance gate (advances when significant at alpha 0.05) — "
            "`same` leads the incumbent `base` by +") in report
    assert "| **base** (winner) |" in report.split("## 1. noise")[1].split("## 2.")[0]


def test_without_advance_the_best_mean_decides(tmp_path, capsys):
    """The default rule is unchanged: the noise pair's better mean wins and the chain goes on
    from it (the gate above is what keeps ``base``)."""
    study_file, ws, status = _run(tmp_path, GATED.replace("advance: {when: significant}\n", ""),
                                  capsys)
    states = _states(study_file, ws)
    assert states["noise"].winner.variant == "same"
    assert states["clear"].base["momentum"] == 0.8
    assert "decision noise" not in status and "kept incumbent" not in status


def test_the_gate_keeps_a_named_baseline_below_min_effect(tmp_path, capsys):
    """``baseline:`` names the incumbent; a significant lead no larger than ``min_effect`` (in
    score units) does not advance the chain."""
    text = HEAD + """\
studies:
  - name: pick
    start_from: none
    seeds: 4
    advance: {when: significant, min_effect: 5.0}
    baseline: plain
    variants:
      - {name: better, set: {weight: 4.1}}
      - {name: plain, set: {weight: 1.0}}
"""
    study_file, ws, status = _run(tmp_path, text, capsys)
    pick = _states(study_file, ws)["pick"]
    assert pick.incumbent == "plain" and pick.winner.variant == "plain"
    assert pick.decision.difference.significant and pick.decision.outcome == "below_min_effect"
    assert "significant, but not above min_effect 5; the chain keeps `plain`" in status


ADAPTIVE = HEAD + """\
studies:
  - name: noise
    start_from: none
    seeds: {min: 2, max: 6}
""" + NOISE_PAIR + """\
  - name: clear
    start_from: previous
    seeds: {min: 2, max: 6}
    variants:
      - {name: base, set: {}}
      - {name: better, set: {weight: 11.1}}
"""


def _seeds(states: dict, study: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for cell in states[study].cells:
        out.setdefault(cell.variant, []).append(cell.seed)
    return out


def test_adaptive_seeds_reach_max_on_noise_and_stop_at_min_on_a_clear_difference(tmp_path, capsys):
    study_file, ws, status = _run(tmp_path, ADAPTIVE, capsys)
    states = _states(study_file, ws)
    assert _seeds(states, "noise") == {"base": [0, 1, 2, 3, 4, 5], "same": [0, 1, 2, 3, 4, 5]}
    assert _seeds(states, "clear") == {"base": [0, 1], "better": [0, 1]}
    assert all(c.status == "done" for s in states.values() for c in s.cells)
    noise, clear = states["noise"], states["clear"]
    assert not noise.decision.difference.significant and noise.winner.variant == "same"
    assert clear.decision.difference.significant and clear.winner.variant == "better"
    # every decision before the last was not significant: each round was needed
    base, same = (noise.results[0].values("score"), noise.results[1].values("score"))
    assert all(not difference(same[:n], base[:n]).significant for n in (2, 4, 6))

    # status and the report say how many seeds each decision took
    assert "6 vs 6 (max)" in status and "2 vs 2 (significant)" in status
    assert "decision noise (advances on the best mean; adaptive seeds 2..6, 2 at a time)" in status
    report = _report(study_file, ws, capsys)
    assert ("**Seeds:** adaptive, 2 to 6 per variant, 2 at a time; the decision took 6 seeds of "
            "`same` and 6 of `base`: the maximum, without a significant difference.") in report
    assert ("the decision took 2 seeds of `better` and 2 of `base`: their difference is "
            "significant.") in report

    # added seeds are ordinary cells: stored, the same set the read-only survey derives, shared
    # with the study that trained them first (clear's base is noise's winner), trained once
    session = Session.open(study_file, workspace=ws)
    written = {s.name: s for s in materialize(session, studies_in_scope(session, None))}
    for name in ("noise", "clear"):
        stored = session.store.study_cells(written[name].study_id)
        assert sorted((c.variant, c.seed, c.run_hash) for c in stored) == \
            sorted((c.variant, c.seed, c.run_hash) for c in states[name].cells)
    shared = {c.seed: c.run_hash for c in noise.cells if c.variant == "same"}
    assert {c.seed: c.run_hash for c in clear.cells if c.variant == "base"} == \
        {0: shared[0], 1: shared[1]}
    runs_before = len(session.store.runs([c.run_hash for s in states.values() for c in s.cells]))
    assert runs_before == 12 + 2                                    # 6+6 in noise, better's 2
    _, _, again = _run(tmp_path, ADAPTIVE, capsys)                  # nothing left to train
    assert _seeds(_states(study_file, ws), "noise") == _seeds(states, "noise")

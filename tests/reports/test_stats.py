"""reports.stats: the runner-up follows the winner rule of runner.orchestrate.results.pick_winner."""
from __future__ import annotations

from reports.stats import compare_winner, runner_up
from runner.orchestrate.results import VariantResult, pick_winner


def _variant(name: str, grader: list[float], unclamped: list[float],
             statuses: list[str] | None = None) -> VariantResult:
    """A variant whose seeds finished with these graders and IoU - SI-logRMSE values."""
    iou = [50.0 + u / 2 for u in unclamped]
    si = [50.0 - u / 2 for u in unclamped]
    return VariantResult(name, seeds=list(range(1, len(grader) + 1)),
                         statuses=statuses or ["done"] * len(grader), grader=list(grader),
                         iou=iou, si_logrmse=si)


def test_runner_up_breaks_grader_ties_like_pick_winner():
    # two runner-ups tie at grader 0 (common in short runs); the unclamped score decides,
    # and the better one comes second in file order, so "first one wins" is not enough
    winner = _variant("aspp", [1.0, 3.0], [1.0, 3.0])
    worse = _variant("plain", [0.0, 0.0], [-30.0, -28.0])
    better = _variant("skip", [0.0, 0.0], [-5.0, -7.0])
    results = [worse, winner, better]
    assert pick_winner(results) is winner
    assert runner_up(results, winner) is better
    assert runner_up(results, winner) is pick_winner([worse, better])

    welch = compare_winner(results, winner)
    assert welch is not None
    assert (welch.winner, welch.runner_up) == ("aspp", "skip")
    assert (welch.n_winner, welch.n_runner_up) == (2, 2)


def test_runner_up_skips_incomplete_variants():
    winner = _variant("a", [5.0, 6.0], [5.0, 6.0])
    unfinished = _variant("b", [4.0], [4.0], statuses=["done", "running"])
    finished = _variant("c", [0.0, 0.0], [-1.0, -2.0])
    assert runner_up([winner, unfinished, finished], winner) is finished
    assert runner_up([winner, unfinished], winner) is None
    assert compare_winner([winner, unfinished], winner) is None


def test_runner_up_without_winner():
    assert runner_up([_variant("a", [0.0], [0.0])], None) is None
    assert compare_winner([], None) is None

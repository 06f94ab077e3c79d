"""ablations.stats: the runner-up follows the winner rule of ablations.objective.pick_winner, and
Welch's test reads the objective's metric (whatever its goal)."""
from __future__ import annotations

import math
import statistics

from scipy import stats

from ablations.objective import Objective, pick_winner
from ablations.results import VariantResult
from ablations.stats import compare_winner, describe, runner_up, welch

# today's mtl rule: grader, ties broken by the unclamped grader
GRADER = Objective("grader", "max", (("grader_unclamped", "max"),))


def _variant(name: str, grader: list[float], unclamped: list[float],
             statuses: list[str] | None = None) -> VariantResult:
    """A variant whose seeds finished with these graders and unclamped graders."""
    statuses = statuses or ["done"] * len(grader)
    seeds = list(range(1, len(statuses) + 1))
    return VariantResult(name, seeds=seeds, statuses=statuses, done_seeds=seeds[:len(grader)],
                         metrics={"grader": list(grader), "grader_unclamped": list(unclamped)})


def test_runner_up_breaks_grader_ties_like_pick_winner():
    # two runner-ups tie at grader 0 (common in short runs); the unclamped score decides,
    # and the better one comes second in file order, so "first one wins" is not enough
    winner = _variant("aspp", [1.0, 3.0], [1.0, 3.0])
    worse = _variant("plain", [0.0, 0.0], [-30.0, -28.0])
    better = _variant("skip", [0.0, 0.0], [-5.0, -7.0])
    results = [worse, winner, better]
    assert pick_winner(results, GRADER) is winner
    assert runner_up(results, winner, GRADER) is better
    assert runner_up(results, winner, GRADER) is pick_winner([worse, better], GRADER)

    welch_ = compare_winner(results, winner, GRADER)
    assert welch_ is not None
    assert (welch_.winner, welch_.runner_up) == ("aspp", "skip")
    assert (welch_.n_winner, welch_.n_runner_up) == (2, 2)
    assert welch_.metric == "grader"


def test_runner_up_skips_incomplete_variants():
    winner = _variant("a", [5.0, 6.0], [5.0, 6.0])
    unfinished = _variant("b", [4.0], [4.0], statuses=["done", "running"])
    finished = _variant("c", [0.0, 0.0], [-1.0, -2.0])
    assert runner_up([winner, unfinished, finished], winner, GRADER) is finished
    assert runner_up([winner, unfinished], winner, GRADER) is None
    assert compare_winner([winner, unfinished], winner, GRADER) is None


def test_runner_up_without_winner():
    assert runner_up([_variant("a", [0.0], [0.0])], None, GRADER) is None
    assert compare_winner([], None, GRADER) is None


def test_welch_on_a_min_objective_compares_the_objective_metric():
    loss = Objective("loss", "min")
    low = VariantResult("low", seeds=[1, 2, 3], statuses=["done"] * 3, done_seeds=[1, 2, 3],
                        metrics={"loss": [0.10, 0.12, 0.11], "acc": [0.5, 0.5, 0.5]})
    high = VariantResult("high", seeds=[1, 2, 3], statuses=["done"] * 3, done_seeds=[1, 2, 3],
                         metrics={"loss": [0.30, 0.33, 0.31], "acc": [0.9, 0.9, 0.9]})
    winner = pick_winner([high, low], loss)
    assert winner is low
    result = compare_winner([high, low], winner, loss)
    ref = stats.ttest_ind([0.10, 0.12, 0.11], [0.30, 0.33, 0.31], equal_var=False)
    assert (result.metric, result.winner, result.runner_up) == ("loss", "low", "high")
    assert math.isclose(result.t, ref.statistic) and math.isclose(result.p, ref.pvalue)
    assert result.t < 0 and result.significant


def test_describe_mean_std_ci_and_missing_values():
    xs = [43.0, 44.0, 43.5]
    s = describe(xs + [None, math.nan])
    m, sd = statistics.mean(xs), statistics.stdev(xs)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert s.n == 3 and math.isclose(s.mean, m) and math.isclose(s.std, sd)
    assert math.isclose(s.ci_low, m - half) and math.isclose(s.ci_high, m + half)
    one = describe([1.5])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 1.5, None, None, None)
    assert describe([]) is None and describe([None]) is None
    t, p = welch([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(p)

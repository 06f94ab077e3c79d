"""A study's decision (ablations.advance), adaptive seeds (ablations.adaptive) and the oriented
Welch difference they read (ablations.stats.difference), on hand-made results."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from ablations.adaptive import more_seeds, seeds_text
from ablations.advance import AdvanceRule, decide, merge_advance
from ablations.objective import Objective
from ablations.results import VariantResult
from ablations.seeds import AdaptiveSeeds
from ablations.stats import difference

SCORE = Objective("score", "max")
LOSS = Objective("loss", "min")
GATE = AdvanceRule("significant")


def _variant(name: str, values: list[float], metric: str = "score", failed: int = 0) -> VariantResult:
    seeds = list(range(len(values) + failed))
    return VariantResult(name, seeds=seeds, statuses=["done"] * len(values) + ["failed"] * failed,
                         done_seeds=seeds[:len(values)], metrics={metric: list(values)})


NOISE = [10.0, 11.0, 9.5, 10.4]          # the incumbent
LUCKY = [10.6, 10.2, 11.1, 10.1]         # better mean, same distribution
BETTER = [15.2, 14.8, 15.6, 15.1]


def test_difference_is_welchs_test_oriented_by_the_goal():
    d = difference(LUCKY, NOISE)
    ref = stats.ttest_ind(LUCKY, NOISE, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue) and d.diff == pytest.approx(sum(LUCKY) / 4 - sum(NOISE) / 4)
    ci = ref.confidence_interval(0.95)
    assert (d.ci_low, d.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    low = difference(NOISE, LUCKY, "min")                      # lower is better: NOISE is worse
    assert low.diff == pytest.approx(d.diff) and low.p == pytest.approx(d.p)
    one = difference([1.0], [2.0, 3.0])
    assert not one.enough_seeds and not one.significant and math.isnan(one.p)
    assert difference([1.0, 1.0], [2.0, 2.0]).significant       # no spread: an exact difference
    assert not difference([1.0, 1.0], [1.0, 1.0]).significant


def test_best_mean_is_the_default_rule():
    results = [_variant("base", NOISE), _variant("lucky", LUCKY)]
    d = decide(results, SCORE, AdvanceRule(), incumbent="base")
    assert d.chosen.variant == "lucky" and d.outcome == "best_mean" and not d.kept_incumbent
    assert d.against.variant == "base"                          # the runner-up


def test_the_gate_keeps_the_incumbent_unless_the_lead_is_significant():
    noise = decide([_variant("base", NOISE), _variant("lucky", LUCKY)], SCORE, GATE, "base")
    assert noise.chosen.variant == "base" and noise.best.variant == "lucky" and noise.kept_incumbent
    assert noise.outcome == "not_significant" and "the chain keeps `base`" in noise.reason
    better = decide([_variant("base", NOISE), _variant("better", BETTER)], SCORE, GATE, "base")
    assert better.chosen.variant == "better" and better.outcome == "significant"
    # tested against the incumbent, not the runner-up: a close second does not matter
    three = decide([_variant("base", NOISE), _variant("better", BETTER),
                    _variant("close", [x - 0.1 for x in BETTER])], SCORE, GATE, "base")
    assert three.against.variant == "base" and three.chosen.variant == "better"


def test_the_gate_on_a_min_objective_and_min_effect():
    base = _variant("base", [x + 5 for x in BETTER], "loss")
    low = _variant("low", NOISE, "loss")                        # about 10 lower: better
    assert decide([base, low], LOSS, GATE, "base").chosen.variant == "low"
    strict = decide([base, low], LOSS, AdvanceRule("significant", min_effect=12.0), "base")
    assert strict.chosen.variant == "base" and strict.outcome == "below_min_effect"


def test_the_gate_needs_seeds_and_an_incumbent():
    one = decide([_variant("base", [1.0]), _variant("big", [9.0])], SCORE, GATE, "base")
    assert one.chosen.variant == "base" and one.outcome == "too_few_seeds"
    none = decide([_variant("a", NOISE), _variant("b", LUCKY)], SCORE, GATE, None)
    assert none.chosen.variant == "b" and none.outcome == "no_incumbent"
    assert "name one with baseline:" in none.reason
    failed = decide([_variant("base", NOISE, failed=1), _variant("b", LUCKY)], SCORE, GATE, "base")
    assert failed.chosen.variant == "b" and "has no complete result" in failed.reason
    best = decide([_variant("base", BETTER), _variant("b", NOISE)], SCORE, GATE, "base")
    assert best.chosen.variant == "base" and best.outcome == "incumbent_best"
    assert decide([_variant("x", [1.0], failed=1)], SCORE, GATE).chosen is None


def test_merge_advance_takes_each_key_from_the_nearest():
    rule = merge_advance({"when": "significant", "alpha": 0.1}, None, {"alpha": 0.01}, {"min_effect": 2})
    assert rule == AdvanceRule("significant", 0.01, 2.0)
    assert merge_advance(None, None) == AdvanceRule()


RULE = AdaptiveSeeds(2, 6, 2)


def test_more_seeds_go_to_the_pair_in_contention_until_significant_or_max():
    results = [_variant("base", NOISE[:2]), _variant("lucky", LUCKY[:2]), _variant("far", [1.0, 1.2])]
    d = decide(results, SCORE, AdvanceRule())
    assert more_seeds(RULE, d) == {"lucky": [2, 3], "base": [2, 3]}     # not `far`
    assert seeds_text(RULE, d, finished=False) == "2 vs 2 (adding)"
    clear = decide([_variant("base", NOISE[:2]), _variant("better", BETTER[:2])], SCORE, AdvanceRule())
    assert more_seeds(RULE, clear) == {}
    assert seeds_text(RULE, clear, finished=True) == "2 vs 2 (significant)"
    full = decide([_variant("base", NOISE + [10.0, 10.2]), _variant("lucky", LUCKY + [10.0, 10.1])],
                  SCORE, AdvanceRule())
    assert more_seeds(RULE, full) == {}
    assert seeds_text(RULE, full, finished=True) == "6 vs 6 (max)"
    # a variant that joins the contention late catches up a step at a time, capped at max
    late = decide([_variant("base", NOISE + [10.0]), _variant("new", [10.3, 10.2])], SCORE, AdvanceRule())
    assert more_seeds(AdaptiveSeeds(2, 5, 2), late) == {"new": [2, 3]}
    assert more_seeds(AdaptiveSeeds(2, 3, 2), late) == {"new": [2]}
    # under the gate the pair is the best mean and the incumbent
    gated = decide([_variant("base", NOISE[:2]), _variant("lucky", LUCKY[:2]),
                    _variant("second", [x - 0.01 for x in LUCKY[:2]])], SCORE, GATE, "base")
    assert set(more_seeds(RULE, gated)) == {"lucky", "base"}

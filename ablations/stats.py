"""Seed statistics: mean, sample std, Student-t 95% CI, and Welch's t-test of a study's winner
against its runner-up on the objective metric.

Why in ``ablations``: the report prints these numbers and the chain's significance gate decides on
them, so both read one implementation. scipy is imported on first use, not with the module: the
chain walk imports this module and most runs never compute a CI.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

from ablations.objective import Objective, runner_up
from ablations.results import VariantResult

__all__ = ["ALPHA", "Sample", "Welch", "compare_winner", "describe", "runner_up", "welch"]

ALPHA = 0.05


@dataclass(frozen=True)
class Sample:
    n: int
    mean: float
    std: Optional[float]        # sample std (ddof=1); None for n < 2
    ci_low: Optional[float]     # 95% CI of the mean (Student t, n-1 dof); None for n < 2
    ci_high: Optional[float]


def describe(values: Sequence[Optional[float]], confidence: float = 0.95) -> Optional[Sample]:
    """Mean, sample std and the Student-t confidence interval of the mean, over the values that
    are numbers (None and NaN are left out). None when no value is left."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n < 2:
        return Sample(n, mean, None, None, None)
    from scipy import stats

    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Sample(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Welch:
    """Welch's test of ``winner`` against ``runner_up`` on ``metric`` (t: winner minus runner-up,
    raw values, so its sign is negative for a better winner of a ``min`` objective)."""

    metric: str
    winner: str
    runner_up: str
    n_winner: int
    n_runner_up: int
    t: float
    p: float
    significant: Optional[bool]    # None when p is undefined (no variance in either group)

    @property
    def verdict(self) -> str:
        if self.significant is None:
            return "undefined (no seed variance)"
        return "beyond seed noise (p < 0.05)" if self.significant else "within seed noise"


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's unequal-variance t statistic and two-sided p-value (``scipy.stats.ttest_ind``)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.ttest_ind(list(a), list(b), equal_var=False)
    return float(res.statistic), float(res.pvalue)


def compare_winner(results: Sequence[VariantResult], winner: Optional[VariantResult],
                   objective: Objective) -> Optional[Welch]:
    """Welch's t-test on the objective metric, winner vs runner-up (the runner-up by the same
    winner rule, :func:`ablations.objective.runner_up`), when both have at least 2 values."""
    second = runner_up(results, winner, objective)
    if winner is None or second is None:
        return None
    a, b = winner.values(objective.metric), second.values(objective.metric)
    if len(a) < 2 or len(b) < 2:
        return None
    t, p = welch(a, b)
    significant = None if math.isnan(p) else p < ALPHA
    return Welch(objective.metric, winner.variant, second.variant, len(a), len(b), t, p, significant)

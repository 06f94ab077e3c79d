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

__all__ = ["ALPHA", "Difference", "Sample", "Welch", "compare_winner", "describe", "difference",
           "runner_up", "welch"]

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


# --------------------------------------------------------------------------- differences
@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` on one metric, turned by its goal so that positive means ``a`` is better,
    with Welch's two-sided p-value and the matching ``1 - alpha`` confidence interval
    (Welch-Satterthwaite degrees of freedom): the interval excludes 0 exactly when p < alpha.

    A side with fewer than 2 values has no variance estimate: ``p`` and the interval are NaN and
    the difference is never significant. Two sides without any spread (a deterministic task)
    differ exactly: p is 0 when their means differ, 1 when they are equal."""

    n_a: int
    n_b: int
    diff: float
    ci_low: float
    ci_high: float
    p: float
    alpha: float

    @property
    def enough_seeds(self) -> bool:
        return self.n_a >= 2 and self.n_b >= 2

    @property
    def significant(self) -> bool:
        return self.enough_seeds and self.p < self.alpha

    @property
    def level(self) -> str:
        """The interval's confidence, as printed: "95%"."""
        return f"{100 * (1 - self.alpha):g}%"


def _mean_var(xs: list[float]) -> tuple[float, float]:
    """Mean and squared standard error of the mean (sample variance / n)."""
    mean = math.fsum(xs) / len(xs)
    return mean, math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1) / len(xs)


def difference(a: Sequence[float], b: Sequence[float], goal: str = "max",
               alpha: float = ALPHA) -> Optional[Difference]:
    """The difference of the means of ``a`` and ``b`` oriented by ``goal`` (NaN values left out);
    None when a side has no value."""
    xs = [float(v) for v in a if not math.isnan(float(v))]
    ys = [float(v) for v in b if not math.isnan(float(v))]
    if not xs or not ys:
        return None
    sign = 1.0 if goal == "max" else -1.0
    diff = sign * (math.fsum(xs) / len(xs) - math.fsum(ys) / len(ys))
    if len(xs) < 2 or len(ys) < 2:
        return Difference(len(xs), len(ys), diff, math.nan, math.nan, math.nan, alpha)
    from scipy import stats

    (_, va), (_, vb) = _mean_var(xs), _mean_var(ys)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(len(xs), len(ys), diff, diff, diff, 0.0 if diff else 1.0, alpha)
    dof = (va + vb) ** 2 / (va ** 2 / (len(xs) - 1) + vb ** 2 / (len(ys) - 1))
    half = float(stats.t.ppf(1 - alpha / 2, dof)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return Difference(len(xs), len(ys), diff, diff - half, diff + half, p, alpha)

"""Seed statistics: mean, sample std, Student-t 95% CI and Welch's t-test winner vs runner-up."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats as _st

from runner.orchestrate.results import VariantResult, pick_winner

ALPHA = 0.05


@dataclass(frozen=True)
class Sample:
    n: int
    mean: float
    std: Optional[float]        # sample std (ddof=1); None for n < 2
    ci_low: Optional[float]     # 95% CI of the mean (Student t, n-1 dof); None for n < 2
    ci_high: Optional[float]


def describe(values: Sequence[float], confidence: float = 0.95) -> Optional[Sample]:
    """Mean, sample std and the Student-t confidence interval of the mean. None when empty."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n < 2:
        return Sample(n, mean, None, None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Sample(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Welch:
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.ttest_ind(list(a), list(b), equal_var=False)
    return float(res.statistic), float(res.pvalue)


def runner_up(results: list[VariantResult], winner: Optional[VariantResult]) -> Optional[VariantResult]:
    """The best complete variant other than the winner: ``pick_winner`` on the rest (same rule,
    ties broken by the unclamped score, then by study-file order)."""
    if winner is None:
        return None
    return pick_winner([r for r in results if r is not winner])


def compare_winner(results: list[VariantResult], winner: Optional[VariantResult]) -> Optional[Welch]:
    """Welch's t-test on final grader, winner vs runner-up, when both have at least 2 seeds."""
    second = runner_up(results, winner)
    if winner is None or second is None or len(winner.grader) < 2 or len(second.grader) < 2:
        return None
    t, p = welch(winner.grader, second.grader)
    significant = None if math.isnan(p) else p < ALPHA
    return Welch(winner.variant, second.variant, len(winner.grader), len(second.grader), t, p,
                 significant)

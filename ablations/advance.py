"""When the chain advances: the study's decision of what the next study starts from.

Why a module: the chain walk takes its next base from this decision, and ``ablate status``, the
report and the adaptive seeds (:mod:`ablations.adaptive`) all state it; written once here, they
agree. The study file opts in with ``advance:`` at top level, in a profile or in a study (each
key from the nearest: study > profile > file)::

    advance: {when: best_mean | significant, alpha: 0.05, min_effect: 0.0}

``best_mean`` (the default, the rule before this module): the next study starts from the best
mean (:func:`ablations.objective.pick_winner`). ``significant``: it starts from the best mean
only if that beats the *incumbent* by Welch's test at ``alpha`` on the objective metric, by
more than ``min_effect`` (objective units, oriented so that positive is better); otherwise the
chain keeps the incumbent. The incumbent is the variant the study names with ``baseline:``, else
the one whose config is the inherited one (the caller works that out: it knows the base). A
study without an incumbent cannot keep one: the best mean decides, and the reason says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ablations.locate import fail, suggest
from ablations.objective import Objective, pick_winner, runner_up
from ablations.results import VariantResult
from ablations.stats import ALPHA, Difference, difference

WHEN = ("best_mean", "significant")
OUTCOMES = {  # Decision.outcome -> what decided, in a few words
    "undecided": "no complete variant",
    "best_mean": "best mean",
    "no_incumbent": "best mean (no incumbent)",
    "incumbent_best": "incumbent is best",
    "too_few_seeds": "kept incumbent: too few seeds",
    "not_significant": "kept incumbent: not significant",
    "below_min_effect": "kept incumbent: below min_effect",
    "significant": "beats incumbent",
}
ADVANCE_KEYS = ("when", "alpha", "min_effect")


@dataclass(frozen=True)
class AdvanceRule:
    when: str = "best_mean"
    alpha: float = ALPHA
    min_effect: float = 0.0

    @property
    def gated(self) -> bool:
        return self.when == "significant"

    def describe(self) -> str:
        """"advances on the best mean" / "advances when significant at alpha 0.05"."""
        if not self.gated:
            return "advances on the best mean"
        effect = f" and above min_effect {self.min_effect:g}" if self.min_effect else ""
        return f"advances when significant at alpha {self.alpha:g}{effect}"


def check_advance(value: Any) -> Optional[dict]:
    """An ``advance:`` mapping of the study file, checked key by key (the schema calls it; a
    mistake raises :func:`ablations.locate.fail` at its key). Returns the keys given."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("advance must be a mapping {when: best_mean|significant, alpha, min_effect}, "
                   f"not {type(value).__name__}")
    for key, number in value.items():
        if key not in ADVANCE_KEYS:
            raise fail(f"unknown key '{key}' (expected one of: {', '.join(ADVANCE_KEYS)})", key,
                       suggestion=suggest(key, ADVANCE_KEYS))
        if key == "when":
            if number not in WHEN:
                raise fail(f"when must be one of {', '.join(WHEN)} (got {number!r})", key)
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise fail(f"{key} must be a finite number (got {number!r})", key)
        if key == "alpha" and not 0 < number < 1:
            raise fail(f"alpha must be between 0 and 1, e.g. 0.05 (got {number!r})", key)
        if key == "min_effect" and number < 0:
            raise fail(f"min_effect must be >= 0, in the objective's units (got {number!r})", key)
    return value


def merge_advance(*given: Optional[dict]) -> AdvanceRule:
    """The rule from ``advance:`` mappings, farthest first (file, profiles root first, study):
    each key from the nearest mapping that gives it."""
    merged: dict = {}
    for partial in given:
        merged.update(partial or {})
    return AdvanceRule(merged.get("when", "best_mean"), float(merged.get("alpha", ALPHA)),
                       float(merged.get("min_effect", 0.0)))


@dataclass(frozen=True)
class Decision:
    """A study's decision. ``chosen``: the variant the chain continues from; ``best``: the best
    mean; ``against``: what ``best`` was tested against (the incumbent under the gate, else the
    runner-up); ``difference``: ``best`` minus ``against`` on the objective metric (positive:
    ``best`` is better). ``outcome``: which rule decided (a key of :data:`OUTCOMES`); ``reason``:
    one sentence saying why ``chosen``, with the numbers."""

    chosen: Optional[VariantResult]
    best: Optional[VariantResult]
    against: Optional[VariantResult]
    difference: Optional[Difference]
    incumbent: Optional[str]
    rule: AdvanceRule
    metric: str
    outcome: str
    reason: str

    @property
    def short(self) -> str:
        """The outcome in a few words (a status column)."""
        text = OUTCOMES[self.outcome]
        d = self.difference
        if self.outcome in ("significant", "not_significant", "below_min_effect") and d is not None:
            text += f" (p = {d.p:.2g})"
        return text

    @property
    def kept_incumbent(self) -> bool:
        """The gate overruled the best mean: the chain keeps the incumbent."""
        return self.chosen is not None and self.chosen is not self.best

    @property
    def seeds(self) -> tuple[int, int]:
        """Done seeds of ``best`` and ``against`` (0 for a missing side)."""
        return tuple(len(r.done_seeds) if r is not None else 0 for r in (self.best, self.against))


def _diff_text(d: Difference, metric: str) -> str:
    if not d.enough_seeds:
        return f"{d.diff:+.3f} {metric} (seeds {d.n_a} vs {d.n_b})"
    return (f"{d.diff:+.3f} {metric} ({d.level} CI [{d.ci_low:+.3f}, {d.ci_high:+.3f}], "
            f"p = {d.p:.3g}, seeds {d.n_a} vs {d.n_b})")


def decide(results: Sequence[VariantResult], objective: Objective, rule: AdvanceRule,
           incumbent: Optional[str] = None) -> Decision:
    """The study's decision under ``rule`` (``incumbent``: the incumbent variant's name, if the
    study has one). Pure: the same results give the same decision."""
    metric = objective.metric
    best = pick_winner(results, objective)
    if best is None:
        return Decision(None, None, None, None, incumbent, rule, metric, "undecided",
                        "no variant has every seed done")
    inc = next((r for r in results if r.variant == incumbent and r.complete), None)
    gate = rule.gated and inc is not None and inc is not best
    against = inc if gate else runner_up(results, best, objective)
    diff = None if against is None else difference(best.values(metric), against.values(metric),
                                                   objective.goal, rule.alpha)

    def made(chosen: VariantResult, outcome: str, reason: str) -> Decision:
        return Decision(chosen, best, against, diff, incumbent, rule, metric, outcome, reason)

    lead = f"`{best.variant}` has the best mean {metric}"
    if diff is not None and not gate:
        lead += f", {_diff_text(diff, metric)} over runner-up `{against.variant}`"
    if not rule.gated:
        return made(best, "best_mean", lead)
    if inc is None:
        why = ("the study has no incumbent (no variant has the inherited configuration; name one "
               "with baseline:)" if incumbent is None
               else f"the incumbent `{incumbent}` has no complete result")
        return made(best, "no_incumbent", f"{lead}; {why}, so the best mean decides")
    if not gate:
        return made(best, "incumbent_best", f"the incumbent {lead}")
    text = f"`{best.variant}` leads the incumbent `{inc.variant}` by {_diff_text(diff, metric)}: "
    keep = f"; the chain keeps `{inc.variant}`"
    if not diff.enough_seeds:
        return made(inc, "too_few_seeds", text + "too few seeds to test (2 per variant needed)" + keep)
    if not diff.significant:
        return made(inc, "not_significant", text + f"not significant at alpha {rule.alpha:g}" + keep)
    if not diff.diff > rule.min_effect:
        return made(inc, "below_min_effect", text + "significant, but not above min_effect "
                    f"{rule.min_effect:g}" + keep)
    return made(best, "significant", text + f"significant at alpha {rule.alpha:g}; the chain "
                f"advances to `{best.variant}`")

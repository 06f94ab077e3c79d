"""Adaptive seeds: more seeds where the decision is still open, none where it is clear.

Why a module: the chain walk adds the seeds and ``ablate status`` and the report say how many a
decision took; all of them derive it from this rule, from the stored results alone, so a
read-only survey shows the cells a run would write and a restarted run continues where the last
one stopped. With ``seeds: {min, max, step}`` (:class:`ablations.seeds.AdaptiveSeeds`) every
variant first trains seeds ``0 .. min-1``. Once every cell is done, failed or pruned, the
decision (:func:`ablations.advance.decide`) compares the best variant with the one it is tested
against: the incumbent under a significance gate, else the runner-up. While that difference is
not significant at the rule's ``alpha``, both get seeds up to ``min(max, fewer of the two +
step)``, numbered on from their last; at ``max`` each the decision is made as it stands. The
added cells are ordinary cells: deduplicated by config, resumable, shared with other studies.
"""
from __future__ import annotations

from typing import Optional

from ablations.advance import Decision
from ablations.seeds import AdaptiveSeeds


def more_seeds(rule: AdaptiveSeeds, decision: Decision) -> dict[str, list[int]]:
    """Variant -> the seeds to add now (empty: the decision is made). ``decision`` must be of a
    study whose every cell is terminal."""
    pair = [r for r in (decision.best, decision.against) if r is not None]
    if len(pair) < 2 or (decision.difference is not None and decision.difference.significant):
        return {}
    target = min(rule.max, min(len(r.seeds) for r in pair) + rule.step)
    out = {}
    for r in pair:
        have = set(r.seeds)
        if len(have) < target:
            out[r.variant] = [s for s in range(rule.max + len(have)) if s not in have][:target - len(have)]
    return out


def seeds_text(rule: Optional[AdaptiveSeeds], decision: Optional[Decision], finished: bool) -> str:
    """The seeds the decision took (best vs what it was tested against) and, with adaptive seeds,
    why they stopped there: "4 vs 4 (significant)", "8 vs 8 (max)", "2 vs 2 (adding)"."""
    if decision is None or decision.best is None:
        return "-"
    n_best, n_against = decision.seeds
    taken = f"{n_best}" if decision.against is None else f"{n_best} vs {n_against}"
    if rule is None or decision.against is None:
        return taken
    if not finished:
        return f"{taken} (adding)"
    significant = decision.difference is not None and decision.difference.significant
    return f"{taken} ({'significant' if significant else 'max'})"

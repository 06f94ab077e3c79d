"""Seeds: how many times each variant is repeated.

Why its own module: the study file accepts three spellings (``seeds: 3`` meaning ``[0, 1, 2]``,
an explicit list, or adaptive seeds ``{min: 2, max: 8, step: 2}``: seeds 0 .. min-1 first, more
for the variants in contention while their difference is not significant; see
:mod:`ablations.adaptive`) and both the schema and the profile trims must normalise them the
same way.
Every seed is one trial (its own ``config_hash``: the seed is part of a trial's identity, and the
config's ``seed`` when the task's Config has one), so a variant's objective is the mean over its
seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ablations.yaml_source import LocatedError

DEFAULT_SEEDS: tuple[int, ...] = (0,)
MAX_SEEDS = 1000
ADAPTIVE_KEYS = ("min", "max", "step")


@dataclass(frozen=True)
class AdaptiveSeeds:
    """``seeds: {min, max, step}``: every variant starts with seeds ``0 .. min-1``; the two
    variants in contention get ``step`` more at a time, seeds numbered on from ``min``, up to
    ``max`` each."""

    min: int
    max: int
    step: int = 2


def adaptive_seeds(value: Any) -> Optional[AdaptiveSeeds]:
    """The adaptive rule of a ``seeds:`` mapping; None for a count or a list. Raises
    :class:`LocatedError` naming the offending key."""
    if not isinstance(value, dict):
        return None
    for key in value:
        if key not in ADAPTIVE_KEYS:
            raise LocatedError(f"unknown key '{key}' in adaptive seeds (expected min, max and "
                               "optionally step)", key)
    for key in ("min", "max"):
        if key not in value:
            raise LocatedError(f"adaptive seeds need '{key}' (e.g. seeds: {{min: 2, max: 8}})")
    for key in ADAPTIVE_KEYS:
        number = value.get(key, 2)
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_SEEDS:
            raise LocatedError(f"{key} must be an integer from 1 to {MAX_SEEDS} (got {number!r})", key)
    if value["max"] < value["min"]:
        raise LocatedError(f"max ({value['max']}) must be >= min ({value['min']})", "max")
    return AdaptiveSeeds(value["min"], value["max"], value.get("step", 2))


def normalize_seeds(value: Any) -> list[int]:
    """``None`` -> ``[0]``; ``N`` (>= 1) -> ``[0 .. N-1]``; a list of distinct ints >= 0 as given;
    adaptive ``{min, ...}`` -> the first seeds ``[0 .. min-1]``.

    Raises :class:`LocatedError` (a ValueError) naming the offending list index or key.
    """
    if value is None:
        return list(DEFAULT_SEEDS)
    if isinstance(value, dict):
        return list(range(adaptive_seeds(value).min))
    if isinstance(value, bool):
        raise LocatedError("seeds must be a count (int >= 1) or a list of ints, not a boolean")
    if isinstance(value, int):
        if value < 1:
            raise LocatedError(f"seeds must be >= 1 (got {value}); give a count or a list of seeds")
        if value > MAX_SEEDS:
            raise LocatedError(f"seeds must be <= {MAX_SEEDS} (got {value})")
        return list(range(value))
    if isinstance(value, list):
        if not value:
            raise LocatedError("seeds must not be an empty list")
        if len(value) > MAX_SEEDS:
            raise LocatedError(f"seeds must list at most {MAX_SEEDS} seeds (got {len(value)})")
        seen: dict[int, int] = {}
        for i, seed in enumerate(value):
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise LocatedError(f"seed must be an int (got {seed!r})", i)
            if seed < 0:
                raise LocatedError(f"seed must be >= 0 (got {seed})", i)
            if seed in seen:
                raise LocatedError(f"seed {seed} is listed twice", i)
            seen[seed] = i
        return list(value)
    raise LocatedError("seeds must be a count (int >= 1), a list of ints or adaptive {min, max, step}, "
                       f"not {type(value).__name__}")

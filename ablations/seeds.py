"""Seeds: how many times each variant is repeated.

Why its own module: the study file accepts two spellings (``seeds: 3`` meaning ``[0, 1, 2]``, or
an explicit list) and both the schema and the profile trims must normalise them the same way.
Every seed is one trial (its own ``config_hash``: the seed is part of a trial's identity, and the
config's ``seed`` when the task's Config has one), so a variant's objective is the mean over its
seeds.
"""
from __future__ import annotations

from typing import Any

from ablations.yaml_source import LocatedError

DEFAULT_SEEDS: tuple[int, ...] = (0,)
MAX_SEEDS = 1000


def normalize_seeds(value: Any) -> list[int]:
    """``None`` -> ``[0]``; ``N`` (>= 1) -> ``[0 .. N-1]``; a list of distinct ints >= 0 as given.

    Raises :class:`LocatedError` (a ValueError) naming the offending list index.
    """
    if value is None:
        return list(DEFAULT_SEEDS)
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
    raise LocatedError(f"seeds must be a count (int >= 1) or a list of ints, not {type(value).__name__}")

"""Grids: cartesian products of value lists, like scikit-learn's ``ParameterGrid``.

Why a module: most of the report's studies are "try these values of this key" (Table 1 is two
grids, SGD x 4 LRs and Adam x 4 LRs). ``grid:`` is either one mapping ``key -> [values]`` or a
list of such mappings, whose products are concatenated (so the SGD and Adam LR ranges need not
be the same). Variant names are derived from the values in key order, e.g.
``optimizer=sgd,lr=0.03``, so they are stable across runs and readable in the report.
"""
from __future__ import annotations

import itertools
from typing import Any

from ablations.variants import Variant, check_unique, derive_name
from ablations.yaml_source import LocatedError

MAX_GRID_VARIANTS = 10_000


def check_grid(grid: Any) -> list[dict]:
    """Validate the grid's shape; return it as a list of sub-grids. Keys are checked elsewhere."""
    subgrids = grid if isinstance(grid, list) else [grid]
    prefix = (lambda i: (i,)) if isinstance(grid, list) else (lambda i: ())
    if isinstance(grid, list) and not grid:
        raise LocatedError("grid must not be an empty list")
    total = 0
    for i, sub in enumerate(subgrids):
        if not isinstance(sub, dict):
            raise LocatedError("grid must be a mapping 'key: [values]' or a list of such mappings "
                               f"(got {type(sub).__name__})", *prefix(i))
        if not sub:
            raise LocatedError("grid must name at least one key", *prefix(i))
        size = 1
        for key, values in sub.items():
            if not isinstance(values, list):
                raise LocatedError(f"grid values must be a list (write '{key}: [{values!r}]' "
                                   "for a single value)", *prefix(i), key)
            if not values:
                raise LocatedError("grid axis has no values (empty list)", *prefix(i), key)
            for j, value in enumerate(values):
                if any(_same(value, other) for other in values[:j]):
                    raise LocatedError(f"value {value!r} is listed twice", *prefix(i), key, j)
            size *= len(values)
        total += size
        if total > MAX_GRID_VARIANTS:
            raise LocatedError(f"grid expands to more than {MAX_GRID_VARIANTS} variants",
                               *prefix(i))
    return subgrids


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def expand_grid(grid: Any) -> list[Variant]:
    """All combinations, sub-grid by sub-grid, last key varying fastest; names derived."""
    out: list[Variant] = []
    for sub in check_grid(grid):
        keys = list(sub)
        for combo in itertools.product(*(sub[k] for k in keys)):
            overrides = dict(zip(keys, combo))
            out.append(Variant(derive_name(overrides), overrides))
    try:
        check_unique(out)
    except LocatedError as exc:
        raise LocatedError(exc.message + "; two grid points derive the same name") from None
    return out


def value_paths(grid: Any) -> list[dict]:
    """For each expanded variant (same order as expand_grid): key -> path of its value in grid."""
    out: list[dict] = []
    for i, sub in enumerate(check_grid(grid)):
        keys = list(sub)
        prefix = (i,) if isinstance(grid, list) else ()
        for combo in itertools.product(*(range(len(sub[k])) for k in keys)):
            out.append({k: prefix + (k, j) for k, j in zip(keys, combo)})
    return out

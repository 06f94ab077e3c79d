"""A study's results per variant: the metric samples over its seeds, as the winner rule reads them.

Why here and not in the store: the winner of a study decides the next study's base, so the rule
and the shape it reads belong to the plan's layer. The store hands out cell records; anything with
the attributes :func:`summarise` reads works (``variant``, ``seed``, ``status``, ``metrics``,
``wall_time_s``, ``params``, ``config``, ``overrides``, ``run_hash``), so this module imports nothing
of the runner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

TERMINAL = ("done", "failed", "pruned")  # a run in one of these is never trained again


@dataclass
class VariantResult:
    """One variant of a study: every cell's status, and the final metrics of its done cells.

    ``metrics[name]`` lists the value of each done cell in cell order; ``done_seeds`` are those
    cells' seeds (one entry per value)."""

    variant: str
    seeds: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    done_seeds: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    wall_time_s: list[float] = field(default_factory=list)
    run_hashes: list[Optional[str]] = field(default_factory=list)
    params: Optional[int] = None
    config: Optional[dict] = None
    overrides: Optional[dict] = None

    @property
    def complete(self) -> bool:
        """Every seed is done (a variant with a failed or pruned seed cannot win)."""
        return bool(self.statuses) and all(s == "done" for s in self.statuses)

    def values(self, metric: str) -> list[float]:
        return list(self.metrics.get(metric, []))

    def mean(self, metric: str) -> float:
        """Mean over done seeds; NaN when there is none (or a value is missing)."""
        xs = self.metrics.get(metric, [])
        if not xs or len(xs) != len(self.done_seeds):
            return math.nan
        return math.fsum(xs) / len(xs)


def summarise(cells: Iterable[Any]) -> list[VariantResult]:
    """Group cell records by variant, in first-appearance order."""
    by_name: dict[str, VariantResult] = {}
    for cell in cells:
        result = by_name.setdefault(cell.variant, VariantResult(cell.variant))
        status = cell.status or "unsampled"
        result.seeds.append(cell.seed)
        result.statuses.append(status)
        result.run_hashes.append(cell.run_hash)
        if cell.overrides is not None and result.overrides is None:
            result.overrides = dict(cell.overrides)
        if cell.config is not None and result.config is None:
            result.config = dict(cell.config)
        if status == "done" and cell.metrics:
            result.done_seeds.append(cell.seed)
            for name, value in cell.metrics.items():
                result.metrics.setdefault(name, []).append(float(value))
            result.wall_time_s.append(cell.wall_time_s or 0.0)
            if cell.params is not None:
                result.params = int(cell.params)
    return list(by_name.values())


def study_finished(results: Iterable[VariantResult]) -> bool:
    """Every cell reached a terminal state (done, failed or pruned)."""
    results = list(results)
    return bool(results) and all(s in TERMINAL for r in results for s in r.statuses)

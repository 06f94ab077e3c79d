"""Per-variant summaries of a study and the winner rule, shared by the scheduler and the reports.

The winner of a study is the variant with the highest mean final grader over its seeds, among
variants whose every seed finished. The grader clamps each task at 0 (``max(IoU - 50, 0)``), so
short runs often tie at 0; ties are broken by the unclamped score ``IoU - SI-logRMSE``, then by
the order of the study file. A pin in the *next*
study overrides keys of the inherited config; it never changes which variant won here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional

from runner.store import TERMINAL


@dataclass
class VariantResult:
    variant: str
    seeds: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    grader: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    si_logrmse: list[float] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    run_hashes: list[str] = field(default_factory=list)
    params: Optional[int] = None
    config: Optional[dict] = None
    overrides: Optional[dict] = None

    @property
    def complete(self) -> bool:
        return bool(self.statuses) and all(s == "done" for s in self.statuses)

    @property
    def mean_grader(self) -> float:
        return sum(self.grader) / len(self.grader) if self.grader else math.nan

    @property
    def rank_key(self) -> tuple[float, float]:
        """(mean grader, mean unclamped IoU - SI-logRMSE): what the winner maximises."""
        unclamped = [i - s for i, s in zip(self.iou, self.si_logrmse)]
        return self.mean_grader, (sum(unclamped) / len(unclamped) if unclamped else math.nan)


def summarise(trial_rows: list[dict]) -> list[VariantResult]:
    """Group ``ResultStore.study_trials`` rows by variant, in first-appearance order."""
    by_name: dict[str, VariantResult] = {}
    for row in trial_rows:
        result = by_name.setdefault(row["variant"], VariantResult(row["variant"]))
        result.seeds.append(row["seed"])
        result.statuses.append(row.get("status") or "unsampled")
        result.run_hashes.append(row.get("run_hash"))
        if row.get("overrides_json") and result.overrides is None:
            result.overrides = json.loads(row["overrides_json"])
        if row.get("config_json") and result.config is None:
            result.config = json.loads(row["config_json"])
        if row.get("status") == "done" and row.get("final_grader") is not None:
            result.grader.append(row["final_grader"])
            result.iou.append(row["final_iou"])
            result.si_logrmse.append(row["final_si_logrmse"])
            result.wall_time_s.append(row.get("wall_time_s") or 0.0)
            result.params = row.get("params")
    return list(by_name.values())


def pick_winner(results: list[VariantResult]) -> Optional[VariantResult]:
    """Highest mean final grader (ties: unclamped score) among complete variants, else None."""
    best: Optional[VariantResult] = None
    for result in results:
        if result.complete and (best is None or result.rank_key > best.rank_key):
            best = result
    return best


def study_finished(results: list[VariantResult]) -> bool:
    """Every cell reached a terminal state (done, failed or pruned)."""
    return bool(results) and all(
        s in TERMINAL for r in results for s in r.statuses)

"""Builders of the report's input (``reports.ReportInput``) from plain values: no store needed.

Test modules get them through the ``kit`` fixture (never ``from conftest import ...``: with several
conftest.py files in the tree that import resolves to whichever was loaded first).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, is_dataclass, replace
from types import SimpleNamespace
from typing import Optional

import pandas as pd
import pytest

from pydantic import BaseModel

from ablations.objective import Objective
from ablations.plan import StudySpec
from ablations.task import Task
from ablations.results import study_finished, summarise
from ablations.variants import Variant
from reports import MetricInfo, ReportInput, StudyReport

CURVE_KEYS = ["run_hash", "variant", "seed", "epoch", "step", "wall_time_s"]


@dataclass(frozen=True)
class Cell:
    """A trial cell with the attributes of the store's CellRecord that summarise and the report read."""

    variant: str
    seed: int
    status: Optional[str]
    run_hash: Optional[str]
    metrics: dict = field(default_factory=dict)
    error: Optional[str] = None
    tracking_run_id: Optional[str] = None
    wall_time_s: Optional[float] = None
    params: Optional[int] = None
    overrides: Optional[dict] = None
    config: Optional[dict] = None


@dataclass(frozen=True)
class Pin:
    set: dict
    reason: str = ""


class _Config(BaseModel):
    seed: int = 0


#: The task the report's specs name (the report reads its name only; metrics come from the input).
TASK = Task(name="test-task", Config=_Config, metrics={"grader": "max"}, objective=Objective("grader"),
            fit=lambda config, ctx: {})


def spec(name: str, variants: dict[str, dict], *, seeds=(1,), title: str = "", section: str = "",
         description: str = "", start_from: Optional[str] = None, pin: Optional[Pin] = None,
         kind: str = "variants", report: Optional[dict] = None,
         objective: Optional[Objective] = None, **more) -> StudySpec:
    """An ``ablations.plan.StudySpec``; ``variants``: name -> overrides, in file order; ``more``:
    other StudySpec fields (``advance``, ``baseline``, ``adaptive``)."""
    return StudySpec(name=name, title=title or name, section=section, description=description,
                     start_from=start_from, pin=pin, seeds=list(seeds), kind=kind,
                     variants=[Variant(v, dict(o)) for v, o in variants.items()], search=None,
                     task=TASK, objective=objective or TASK.objective, report=dict(report or {}), **more)


def curves(rows: list[dict]) -> pd.DataFrame:
    """Epoch rows (run_hash, variant, seed, epoch, step, wall_time_s and metric columns), in the
    caller's order: (variant, seed, epoch)."""
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.sort_values(["variant", "seed", "epoch"], kind="stable").reset_index(drop=True)


def study(spec_: StudySpec, cells: list[Cell], objective: Objective, curve_rows=(),
          pin_from_store=None) -> StudyReport:
    """A StudyReport the way the caller builds one: summarise, study_finished, status counts."""
    if is_dataclass(spec_) and spec_.objective is None:  # a duck-typed spec is read as given
        spec_ = replace(spec_, objective=objective)
    results = summarise(cells)
    counts = Counter(c.status or "unsampled" for c in cells)
    return StudyReport(spec=spec_, objective=objective, results=results,
                       finished=study_finished(results), status_counts=dict(sorted(counts.items())),
                       cells=list(cells), curves=curves(list(curve_rows)),
                       pin_from_store=pin_from_store)


def report_input(studies: list[StudyReport], metrics: list[MetricInfo], objective: Objective, *,
                 name: str = "demo", profile: str = "test", file: Optional[str] = "studies.yaml",
                 task: str = "mtl", extra_studies=()) -> ReportInput:
    """Run totals over the distinct runs the cells point at, as the caller counts them."""
    runs: dict[str, Cell] = {}
    for s in studies:
        for c in s.cells:
            if c.run_hash is not None:
                runs.setdefault(c.run_hash, c)
    return ReportInput(name=name, profile=profile, file=file, task=task, metrics=metrics,
                       objective=objective, studies=studies, runs_total=len(runs),
                       runs_done=sum(1 for c in runs.values() if c.status == "done"),
                       wall_time_total_s=sum(c.wall_time_s or 0.0 for c in runs.values()),
                       extra_studies=list(extra_studies))


@pytest.fixture(scope="session")
def kit():
    return SimpleNamespace(Cell=Cell, Pin=Pin, spec=spec, study=study, report_input=report_input,
                           curves=curves)

"""What enters and leaves the result store: typed, immutable records (never dicts keyed by column
names).

Why: the store's tables are private; callers (the chain walk, the worker, the read-only views,
the report) depend on these shapes only, so a column can change without touching them. Metrics are
data (``{name: value}``), not columns: a task reports whatever metrics it declares. A metric whose
value was NaN reads back as ``float('nan')``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

RUN_STATUSES = ("pending", "running", "interrupted", "done", "failed", "pruned")
TERMINAL = ("done", "failed", "pruned")  # a run in one of these is never trained again


@dataclass(frozen=True)
class Cell:
    """One (variant, seed) cell a study declares (input to ``ResultStore.add_trials``).

    ``config_hash`` None: a search cell, not sampled yet. ``task``: the task reference that trains
    the cell's run (required with a ``config_hash``; stored on a run the cell creates)."""
    variant: str
    seed: int
    config: Optional[dict] = None
    config_hash: Optional[str] = None
    overrides: Optional[dict] = None
    task: Optional[str] = None


@dataclass(frozen=True)
class StudyRecord:
    id: int
    plan: str
    profile: str
    name: str
    position: int
    kind: str
    start_from: Optional[str]
    pin: Optional[dict]
    pin_reason: Optional[str]
    base_config: dict
    source: Optional[str]  # the study file that wrote the row (resolved path)


@dataclass(frozen=True)
class CellRecord:
    """A trial cell (study, variant, seed) joined with the run it points at (if any).

    ``status`` is None for a search cell not sampled yet; ``metrics`` are the run's final metrics
    (empty until it is done). ``optuna_trial`` -1: being sampled by ``claimed_by``."""

    id: int
    study_id: int
    variant: str
    seed: int
    run_hash: Optional[str]
    overrides: Optional[dict]
    optuna_study: Optional[str]
    optuna_trial: Optional[int]
    status: Optional[str]
    error: Optional[str]
    config: Optional[dict]
    metrics: dict = field(default_factory=dict)
    params: Optional[int] = None
    wall_time_s: Optional[float] = None
    tracking_run_id: Optional[str] = None
    epochs_done: int = 0
    worker: Optional[str] = None
    claimed_by: Optional[str] = None


@dataclass(frozen=True)
class RunCell:
    """A cell that points at a run (one run may serve several studies)."""

    cell_id: int
    study: str
    plan: str
    profile: str
    variant: str
    seed: int
    optuna_study: Optional[str]
    optuna_trial: Optional[int]


@dataclass(frozen=True)
class RunRecord:
    hash: str
    task: str
    config: dict
    status: str
    worker: Optional[str]
    attempts: int
    error: Optional[str]
    wall_time_s: Optional[float]
    device: Optional[str]
    params: Optional[int]
    tracking_run_id: Optional[str]
    epochs_done: int
    step: int
    metrics: dict = field(default_factory=dict)  # final metrics (a done run's)
    lease_expires: Optional[float] = None
    code_version: Optional[str] = None      # the code that trained it (None: not recorded)
    data_fingerprint: Optional[str] = None  # the task's fingerprint of the data it read


@dataclass(frozen=True)
class ClaimedRun:
    """A run this worker now holds (its lease is renewed by the heartbeat)."""

    hash: str
    task: str
    config: dict
    attempts: int
    tracking_run_id: Optional[str]
    resumed: bool  # an earlier attempt had started it


@dataclass(frozen=True)
class EpochRecord:
    run_hash: str
    epoch: int
    step: int
    wall_time_s: float
    metrics: dict


@dataclass(frozen=True)
class StepRecord:
    run_hash: str
    step: int
    wall_time_s: float
    metrics: dict


@dataclass(frozen=True)
class PlanCell:
    """One cell of a study file's studies with its run's progress (the progress display's row).
    The run fields are None for a search cell not sampled yet."""

    study: str
    variant: str
    seed: int
    run_hash: Optional[str]
    status: Optional[str]
    epochs_done: Optional[int]
    step: Optional[int]
    wall_time_s: Optional[float]
    error: Optional[str]

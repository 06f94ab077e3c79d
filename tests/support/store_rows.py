"""Rows for the result-store conformance suite (tests/runner/store/test_store.py), which runs on
SQLite and PostgreSQL, so both backends are checked against the same data.

The metric names are a task's own (the store names none): ``score`` and ``aux`` here."""
from __future__ import annotations

from dataclasses import dataclass, field

TASK = "tests.fake_task"  # the task reference stored on the runs these helpers create


@dataclass(frozen=True)
class Step:
    """A step row as the trial context buffers it (``record_steps`` duck-types it)."""
    step: int
    wall_time_s: float
    scalars: dict = field(default_factory=dict)


def study(store, name="s", position=0) -> int:
    return store.ensure_study(plan="p", profile="default", name=name, position=position, kind="variants",
                              start_from=None, pin=None, pin_reason=None, base_config={"lr": 0.1})


def add(store, study_id, variant="a", seed=0, run_hash="h1", lr=0.1) -> bool:
    return store.add_trial(study_id, variant, seed, config={"lr": lr, "seed": seed}, config_hash=run_hash,
                           overrides={"lr": lr}, task=TASK)


def record_epoch(store, run_hash: str, epoch: int, score: float = 1.0, **more: float) -> None:
    store.record_epoch(run_hash, epoch, 2 * epoch, float(epoch), {"score": score, "aux": 0.5, **more})


def steps(*numbers: int) -> list[Step]:
    return [Step(s, 0.1 * s, {"loss": 1.0 / s, "loss_part": 0.5 / s}) for s in numbers]

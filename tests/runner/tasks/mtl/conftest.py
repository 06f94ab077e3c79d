"""Fixtures of the mtl task's tests: a real trial context over an in-memory recorder.

``make_ctx(run_dir, stop_after=N)`` builds :class:`runner.orchestrate.context.TrialContext` as a
worker does (resuming from ``run_dir``'s checkpoint when there is one), with a
:class:`MemoryRecorder` in place of the store/tracker/Optuna, so the tests see exactly what a
trial logged, and a stop request that turns true after N polls of ``should_stop``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import pytest

from runner.orchestrate.context import TrialContext, read_checkpoint


class MemoryRecorder:
    """The ctx's Recorder protocol, keeping everything in lists."""

    def __init__(self) -> None:
        self.live: list[int] = []                          # on_step, as logged
        self.steps: list[tuple[int, dict]] = []            # record_steps: durable rows
        self.epochs: list[tuple[int, int, dict]] = []      # (epoch, step, metrics)
        self.artifacts: list[tuple[str, Optional[str]]] = []

    def on_step(self, step: int, scalars: Mapping[str, float]) -> None:
        self.live.append(step)

    def record_steps(self, rows) -> None:
        self.steps.extend((row.step, dict(row.scalars)) for row in rows)

    def record_epoch(self, epoch: int, step: int, wall_time_s: float, metrics: Mapping[str, float]) -> None:
        self.epochs.append((epoch, step, dict(metrics)))

    def check_lease(self) -> None:
        pass

    def lease_lost(self) -> bool:
        return False

    def log_artifact(self, path: str, artifact_path: Optional[str]) -> None:
        self.artifacts.append((path, artifact_path))


@pytest.fixture(scope="session")
def make_ctx():
    """``make_ctx(run_dir, stop_after=None, workspace=run_dir/../workspace, cls=TrialContext)``."""

    def make(run_dir: Path, *, stop_after: Optional[int] = None, workspace: Optional[Path] = None,
             cls: type = TrialContext) -> TrialContext:
        polls = {"n": 0}

        def stop_requested() -> bool:
            polls["n"] += 1
            return stop_after is not None and polls["n"] > stop_after

        return cls(run_dir=run_dir, workspace=workspace or Path(run_dir).parent / "workspace", device="cpu", seed=0,
                   recorder=MemoryRecorder(), stop_requested=stop_requested,
                   resume=read_checkpoint(run_dir))

    return make

"""The task bench/concurrency.py trains: a step is a sleep, so its figures are ablate's own
bookkeeping (claims, leases, step and epoch rows, tracker runs), not training.

A duck-typed task (``Config``, ``metrics``, ``fit``; see ablations/task.py), named ``sleep_task``
in the bench's study file and found on ``sys.path`` (the bench's own directory, which worker
processes inherit). It behaves like a real task towards the runner: it resumes from its last
checkpoint, logs every step and epoch, stops (after a checkpoint) when asked, checkpoints after
every epoch. Each ``fit`` call appends ``start`` to ``<log_dir>/<run hash>.log`` (O_APPEND, one
``write``), so the bench counts the trials trained more than once.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(1, ge=1)
    steps_per_epoch: int = Field(2, ge=1)
    step_s: float = Field(0.002, ge=0)
    log_dir: Optional[str] = None


metrics = {"score": "max"}
execution_keys = ("step_s", "log_dir")


def calls(log_dir: Path, run_hash: str) -> int:
    """How many times ``fit`` was called for the run."""
    path = Path(log_dir) / f"{run_hash}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def fit(config: Config, ctx):
    if config.log_dir:
        fd = os.open(Path(config.log_dir) / f"{Path(ctx.run_dir).name}.log",
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b"start\n")
        finally:
            os.close(fd)
    state = ctx.load_checkpoint() or {"epoch": 0, "step_in_epoch": 0, "step": 0}
    epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
    final = 10.0 + 1000.0 * config.lr + config.momentum - 1000.0 * config.weight_decay
    while epoch < config.epochs:
        while step_in_epoch < config.steps_per_epoch:
            if ctx.should_stop():
                ctx.save_checkpoint({"epoch": epoch, "step_in_epoch": step_in_epoch, "step": step})
                return None
            time.sleep(config.step_s)
            step_in_epoch += 1
            step += 1
            ctx.log_step(step, loss=1.0 / step)
        epoch += 1
        step_in_epoch = 0
        ctx.log_epoch(epoch, {"score": final * epoch / config.epochs})
        ctx.save_checkpoint({"epoch": epoch, "step_in_epoch": 0, "step": step})
    return {"score": final}

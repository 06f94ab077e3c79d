"""The one fake task every test shares: a task written as a user would write one, training nothing.

A study file names it ``task: tests.support.fake_task``. Its metrics are a pure function of the
config, so winners are known in advance and hundreds of trials take seconds:

    score = 10 + 1000*lr + momentum - 1000*weight_decay + weight + 0.01*seed  (+ noise)

``noise`` adds seeded Gaussian noise of that standard deviation (the same draw for the same seed
and config), for tests of statistics, significance gates and adaptive seeds. ``error`` (goal
``min``) is ``100 - score``. Each epoch the score climbs to its final value.

It behaves like a real task towards the runner: it resumes from ``ctx.load_checkpoint()``, logs
steps and epochs through the ctx, polls ``ctx.should_stop()`` every step and checkpoints before
returning on a stop, and checkpoints after every epoch. Its optional hooks: ``count_parameters``,
``rehearsal_config`` (one epoch of two steps), ``miniature_config`` (one epoch of one step) and
``cost`` (signature ``step_s``).

With ``log_dir`` set, every call appends lines to ``<log_dir>/<run hash>.log`` with O_APPEND (one
``write`` per line, so lines of concurrent or killed processes never interleave)::

    start <epoch> <global_step>     fit was called; it resumes at this position
    step <global_step>              a step ran
    ckpt <global_step>              the checkpoint at this step is in place
    done <global_step>              fit returned a result

so a test can prove that a trial finished exactly once and that a resume repeated no checkpointed
step.

``fault`` strikes at step ``fault_at_step`` (before that step runs), on every attempt, unless
``<log_dir>/fixed`` exists (the user "fixed" the cause). nan, oom, error and data raise (data as
``ctx.InputError``: bad input, not a bad trial); the others act on the process or its disk for real:

    kill      the process SIGKILLs itself (as the OOM killer would)
    escape    raises :class:`Escape`, a BaseException no handler of the worker expects
    fill      fills the workspace's file system to the last byte (``<workspace>/filler``), once:
              while that file exists it is not filled again; the writes after it meet ENOSPC
    stall     (needs ``log_dir``) attempt 1 waits in the middle of its first checkpoint write (the
              temporary file open, half written) until ``<log_dir>/gate-1`` exists, attempt 2
              after its first step until ``gate-2`` exists; each creates ``gate-<n>.waiting``
              first. A test SIGSTOPs them there, past their lease, and goes on with SIGCONT.
    hook      ``rehearsal_config`` and ``miniature_config`` raise (a user's hook with a bug); the
              training itself runs as with none

A config whose ``momentum`` and ``weight`` are both 0 is refused (``momentum + weight must be >
0``): a cross-field error a study's variant can meet only on the winner it inherits.
"""
from __future__ import annotations

import errno
import os
import random
import signal
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULT_MESSAGES = {
    "nan": "non-finite loss at step 2 (loss=nan); lower the learning rate",
    "oom": "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)",
    "error": "fake task exploded on purpose",
    "data": "val/semseg/3.png: cannot decode (image file is truncated); expected an 8-bit PNG",
    "escape": "the worker met an error nothing expects",
    "hook": "fake task's rehearsal hook exploded on purpose",
}
FAULTS = ("none", "nan", "oom", "error", "data", "kill", "escape", "fill", "stall", "hook")


class Escape(BaseException):
    """An error no handler of the worker expects (as some libraries' BaseException subclasses)."""


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    weight: float = Field(0.5, ge=0)
    epochs: int = Field(2, ge=1)
    steps_per_epoch: int = Field(3, ge=1)
    seed: int = 0
    noise: float = Field(0.0, ge=0)
    fault: Literal[FAULTS] = "none"
    fault_at_step: int = Field(2, ge=1)
    step_s: float = Field(0.0, ge=0)         # "training" time per step
    log_dir: Optional[str] = None

    @model_validator(mode="after")
    def _something_to_learn(self) -> "Config":
        if self.momentum + self.weight <= 0:
            raise ValueError("momentum + weight must be > 0")
        return self


metrics = {"score": "max", "error": "min"}
objective = "score"
execution_keys = ("step_s", "log_dir")


def final_score(config: Config) -> float:
    score = (10.0 + 1000.0 * config.lr + config.momentum - 1000.0 * config.weight_decay
             + config.weight + 0.01 * config.seed)
    if config.noise:
        key = (config.seed, config.lr, config.momentum, config.weight_decay, config.weight)
        score += random.Random(repr(key)).gauss(0.0, config.noise)
    return score


def count_parameters(config: Config) -> int:
    return 1234


def rehearsal_config(config: Config) -> Config:
    """What ``ablate run --rehearse`` trains: one epoch of two steps."""
    if config.fault == "hook":
        raise ValueError(FAULT_MESSAGES["hook"])
    return config.model_copy(update={"epochs": 1, "steps_per_epoch": 2})


def miniature_config(config: Config) -> tuple[Config, list[str]]:
    """What a rehearsal trains once another config of its ``step_s`` ran: one epoch of one step."""
    if config.fault == "hook":
        raise ValueError(FAULT_MESSAGES["hook"])
    return config.model_copy(update={"epochs": 1, "steps_per_epoch": 1}), ["miniature: 1 step"]


def cost(config: Config) -> tuple[dict, int]:
    """Configs of one ``step_s`` take the same time per step; epochs x steps_per_epoch steps."""
    return {"step_s": config.step_s}, config.epochs * config.steps_per_epoch


def log_line(log_dir: Optional[str], run_hash: str, text: str) -> None:
    if not log_dir:
        return
    fd = os.open(Path(log_dir) / f"{run_hash}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def read_log(log_dir: Path, run_hash: str) -> list[tuple[str, int]]:
    path = Path(log_dir) / f"{run_hash}.log"
    if not path.exists():
        return []
    return [(parts[0], int(parts[-1])) for parts in (line.split() for line in path.read_text().splitlines())]


def wait_at_gate(gate: Path) -> None:
    """Create ``<gate>.waiting``, then wait until ``gate`` exists."""
    Path(f"{gate}.waiting").touch()
    while not gate.exists():
        time.sleep(0.01)


class _GateWhenPickled:
    """Put into a checkpoint: pickling it (inside torch.save, the temporary file open) waits at
    ``gate``, then pickles as an empty dict."""

    def __init__(self, gate: Path):
        self.gate = gate

    def __reduce__(self):
        wait_at_gate(self.gate)
        return (dict, ())


def fill_disk(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (ENOSPC), in ever smaller chunks."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def _strike(fault: str, ctx) -> None:
    """``fault`` (not stall), at step ``fault_at_step``."""
    if fault == "data":
        raise ctx.InputError(FAULT_MESSAGES["data"])
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "escape":
        raise Escape(FAULT_MESSAGES["escape"])
    if fault == "fill":
        filler = Path(ctx.workspace) / "filler"
        if not filler.exists():
            fill_disk(filler)
        return
    raise (FloatingPointError if fault == "nan" else RuntimeError)(FAULT_MESSAGES[fault])


def fit(config: Config, ctx):
    run = Path(ctx.run_dir).name
    state = ctx.load_checkpoint() or {"epoch": 0, "step_in_epoch": 0, "step": 0}
    epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
    log_line(config.log_dir, run, f"start {epoch} {step}")
    attempt = sum(1 for event, _ in read_log(config.log_dir, run) if event == "start") if config.log_dir else 1
    fixed = config.log_dir is not None and (Path(config.log_dir) / "fixed").exists()
    fault = "none" if fixed or config.fault == "hook" else config.fault
    final = final_score(config)
    first_step = step + 1

    def checkpoint() -> None:
        saved = {"epoch": epoch, "step_in_epoch": step_in_epoch, "step": step}
        if fault == "stall" and attempt == 1:
            saved["gate"] = _GateWhenPickled(Path(config.log_dir) / "gate-1")
        ctx.save_checkpoint(saved)
        log_line(config.log_dir, run, f"ckpt {step}")

    while epoch < config.epochs:
        while step_in_epoch < config.steps_per_epoch:
            if ctx.should_stop():
                checkpoint()
                return None
            if fault == "stall":
                if attempt == 2 and step == first_step:  # after its first step
                    wait_at_gate(Path(config.log_dir) / "gate-2")
            elif fault != "none" and step + 1 >= config.fault_at_step:
                _strike(fault, ctx)
            if config.step_s:
                time.sleep(config.step_s)
            step_in_epoch += 1
            step += 1
            log_line(config.log_dir, run, f"step {step}")
            ctx.log_step(step, loss=1.0 / step)
        epoch += 1
        step_in_epoch = 0
        score = final * epoch / config.epochs
        ctx.log_epoch(epoch, {"score": score, "error": 100.0 - score})
        checkpoint()
    log_line(config.log_dir, run, f"done {step}")
    return {"score": final, "error": 100.0 - final}

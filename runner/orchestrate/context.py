"""The ``ctx`` a task's ``fit(config, ctx)`` gets: everything a training run tells or asks ablate.

Why one object: a task (the built-in ``mtl`` or a user's) must not know about the result store,
leases, MLflow or Optuna, yet its trial must resume after a crash, stop on Ctrl-C, be pruned and be
logged exactly as the report's own network is. The ctx is that boundary, in a few members:

* ``run_dir``, ``workspace``, ``device``, ``seed``, ``rehearsal``, ``InputError`` (the exception a
  task raises for bad input: exit 2, the trial handed back untouched), ``CheckpointError`` (what a
  task raises when the checkpoint it got back does not fit its model: the checkpoint is set aside
  and the trial starts over);
* ``log_step(step, **scalars)``: buffered; returns in microseconds;
* ``log_epoch(epoch, metrics)``: recorded at once; may raise :class:`TrialPruned` (Optuna's pruner)
  or :class:`LeaseLost` (another worker owns the run): the task lets both propagate;
* ``should_stop()``: True on Ctrl-C/SIGTERM or a lost lease; the task then saves a checkpoint and
  returns (what it returns is ignored: the trial is ``interrupted`` and resumes later);
* ``save_checkpoint(obj)`` / ``load_checkpoint()``: ``obj`` is anything ``torch.save`` takes;
  ``load_checkpoint`` gives the last one back after a crash, None on a fresh run;
* ``log_artifact(path, artifact_path=None)``.

Where the records go is the :class:`Recorder`'s business (the worker's store + tracker + Optuna,
or ``ablate train``'s console). Wall time, the epoch and the step are counted here, not by tasks.

Crash contract: a checkpoint is written to a unique temporary file and renamed, after the step
rows buffered so far are recorded and only while the lease is held, so a resume never sees half a
file, never repeats a recorded step it has not checkpointed past, and a worker that lost its run
never overwrites the new owner's checkpoint. An unreadable checkpoint is a :class:`CheckpointError`
from :func:`read_checkpoint` (one reader for every path), never a traceback.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

from ablations.errors import InputError

CHECKPOINT_NAME = "checkpoint.pt"


class TrialPruned(Exception):
    """Optuna's pruner stopped the trial on its intermediate objective."""


class LeaseLost(RuntimeError):
    """Another worker took the run over (our lease expired): stop without writing anything."""


class CheckpointError(Exception):
    """A checkpoint file exists but cannot be read back (truncated, garbage, another format)."""


@dataclass(frozen=True)
class Position:
    """Where a checkpoint stands: completed epochs, global step, training seconds so far."""

    epoch: int = 0
    step: int = 0
    wall_time_s: float = 0.0


@dataclass(frozen=True)
class Resume:
    position: Position
    state: Any


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def read_checkpoint(run_dir: Path) -> Optional[Resume]:
    """The checkpoint of ``run_dir`` (None when there is none). Every reader goes through here, so
    a file that cannot be read is one typed error naming it, whatever torch raised."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        return None
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        meta, state = saved["ablate"], saved["task"]
        position = Position(int(meta["epoch"]), int(meta["step"]), float(meta["wall_time_s"]))
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, pickled elsewhere: all unreadable
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {reason})") from None
    return Resume(position, state)


def write_checkpoint(run_dir: Path, position: Position, state: Any, name: str = CHECKPOINT_NAME) -> Path:
    """Write atomically: a unique temporary file in ``run_dir``, fsync, rename over the checkpoint
    (``name``: another file of the same format, e.g. a finished run's final weights)."""
    import torch

    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:  # through a Python file: a full disk is an OSError(ENOSPC) raised by its write,
                # which torch wraps in a RuntimeError (its own C++ writer says only "iostream error")
                torch.save({"ablate": {"epoch": position.epoch, "step": position.step,
                                       "wall_time_s": position.wall_time_s}, "task": state}, handle)
            except RuntimeError as exc:
                if exc.__context__ is None:
                    raise
                raise exc.__context__
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class StepRow:
    step: int
    wall_time_s: float
    scalars: Mapping[str, float]


class Recorder(Protocol):
    """Where a trial's records go. The worker's writes to the store, the tracker and Optuna;
    ``ablate train``'s prints epochs."""

    def on_step(self, step: int, scalars: Mapping[str, float]) -> None:
        """Per step, cheap (a queue append): the tracker's point, the progress display."""

    def record_steps(self, rows: list[StepRow]) -> None:
        """A batch of buffered steps, durably (one transaction)."""

    def record_epoch(self, epoch: int, step: int, wall_time_s: float, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics, durably; may raise TrialPruned or LeaseLost."""

    def check_lease(self) -> None:
        """Raise LeaseLost if this worker no longer holds the run."""

    def lease_lost(self) -> bool:
        """Non-raising, cheap: has the heartbeat seen the lease go?"""

    def log_artifact(self, path: str, artifact_path: Optional[str]) -> None: ...


@dataclass
class TrialContext:
    """The task-facing side of one attempt at one run (see the module docstring)."""

    run_dir: Path
    workspace: Path
    device: str
    seed: int
    recorder: Recorder
    stop_requested: Callable[[], bool] = lambda: False
    resume: Optional[Resume] = None
    rehearsal: bool = False
    step_flush: int = 200
    InputError = InputError
    CheckpointError = CheckpointError

    _rows: list = field(default_factory=list, init=False, repr=False)
    _epoch: int = field(default=0, init=False)
    _step: int = field(default=0, init=False)
    _started: float = field(default=0.0, init=False)
    _wall_before: float = field(default=0.0, init=False)
    stopped: bool = field(default=False, init=False)
    saved: Optional[Position] = field(default=None, init=False)  # where the last checkpoint stands

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume is not None:
            position = self.resume.position
            self._epoch, self._step, self._wall_before = position.epoch, position.step, position.wall_time_s
        self._started = time.perf_counter()

    # -- what a task calls -----------------------------------------------------------------
    def log_step(self, step: int, **scalars: float) -> None:
        self._step = int(step)
        values = {k: float(v) for k, v in scalars.items()}
        self._rows.append(StepRow(self._step, self.wall_time_s, values))
        self.recorder.on_step(self._step, values)
        if len(self._rows) >= self.step_flush:
            self._flush()

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        values = {str(k): float(v) for k, v in metrics.items()}
        self._flush()
        self._epoch = int(epoch)
        self.recorder.record_epoch(self._epoch, self._step, self.wall_time_s, values)

    def should_stop(self) -> bool:
        if self.stopped or self.stop_requested() or self.recorder.lease_lost():
            self.stopped = True
        return self.stopped

    def save_checkpoint(self, obj: Any) -> None:
        self._flush()
        self.recorder.check_lease()  # a worker that lost the run never overwrites the new owner's file
        position = self.position
        write_checkpoint(self.run_dir, position, obj)
        self.saved = position

    def load_checkpoint(self) -> Any:
        return None if self.resume is None else self.resume.state

    def log_artifact(self, path: os.PathLike | str, artifact_path: Optional[str] = None) -> None:
        self.recorder.log_artifact(str(path), artifact_path)

    # -- what the worker reads -------------------------------------------------------------
    @property
    def wall_time_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._started

    @property
    def position(self) -> Position:
        return Position(self._epoch, self._step, self.wall_time_s)

    def flush(self) -> None:
        """Record the buffered step rows (the worker calls it on the way out)."""
        self._flush()

    def _flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.recorder.record_steps(rows)


def finite_metrics(metrics: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, float]:
    """``metrics`` as floats; raises ValueError naming a required metric that is missing or a
    value that is not a number (a task's bug, so the trial fails with that reason)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric '{name}' is not a number ({value!r})") from None
    missing = [m for m in required if m not in out or math.isnan(out[m])]
    if missing:
        raise ValueError(f"the task's result lacks {', '.join(missing)} (got {', '.join(sorted(out)) or 'nothing'})")
    return out

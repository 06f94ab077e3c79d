"""Short timed runs of a task's configs: shrunk configs, step times, peak memory, calibration.

Shared by the rehearsal (:mod:`runner.orchestrate.rehearsal`) and ``--calibrate``. A config is
shrunk by its task's ``rehearsal_config`` (a couple of steps, one validation batch); a step's time
is read from the step rows the ctx records (``wall_time_s`` at each ``log_step``: a task logs every
step when ``ctx.rehearsal`` is set), the first step left out as warm-up.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from ablations import Task
from runner.orchestrate.context import StepRow, TrialContext
from runner.orchestrate.estimate import record_calibration, work_of
from runner.orchestrate.faults import failure_reason

#: The rehearsal's own workspace inside the study's: its store, tracker, runs and stand-in assets.
REHEARSAL_DIR = "rehearsal"


def shrink(task: Task, config: Any, *, miniature: bool = False) -> tuple[Any, list[str]]:
    """``config`` as its task rehearses it, with the task's notes (what it replaced and why);
    ``miniature``: as its ``miniature_config`` (the caller checks that the task has one)."""
    if miniature:
        shrunk = task.miniature_config(config)
    elif task.rehearsal_config is None:
        return config, [f"task '{task.name}' has no rehearsal_config: trained as configured"]
    else:
        shrunk = task.rehearsal_config(config)
    if isinstance(shrunk, tuple):
        shrunk, notes = shrunk
        return shrunk, [str(n) for n in notes]
    return shrunk, []


def step_seconds(rows: Iterable[tuple[int, float]]) -> Optional[float]:
    """Seconds per step between the first and the last recorded step of one attempt (None: fewer
    than two steps at distinct times). The first step's own time (allocations, kernel choice) is
    left out."""
    points = sorted({step: wall for step, wall in rows}.items())
    if len(points) < 2 or points[-1][1] <= points[0][1]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


class PeakMemory:
    """The peak memory of this process during a trial: resident set (Linux: VmHWM, reset through
    ``/proc/self/clear_refs``; elsewhere the process's lifetime peak) and, on CUDA, the device's
    peak allocation."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def describe(self) -> str:
        text = f"peak RSS {_gib(_rss_peak())}"
        if self.cuda:
            import torch

            text += f", CUDA {_gib(torch.cuda.max_memory_allocated(self.device))}"
        return text


def _rss_peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


class _Rows:
    """The ctx's records of a calibration: step rows kept in memory, nothing else."""

    def __init__(self) -> None:
        self.rows: list[StepRow] = []

    def on_step(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def record_steps(self, rows: list[StepRow]) -> None:
        self.rows.extend(rows)

    def record_epoch(self, epoch: int, step: int, wall_time_s: float, metrics: Mapping[str, float]) -> None:
        pass

    def check_lease(self) -> None:
        pass

    def lease_lost(self) -> bool:
        return False

    def log_artifact(self, path: str, artifact_path: Optional[str]) -> None:
        pass


def calibrate(session, trials: list[tuple[str, Any]], device: Optional[str] = None,
              say: Callable[[str], None] = print) -> dict[str, float]:
    """Time a few training steps of one config per work key among ``trials`` (label, config) on
    this machine and
    return work key -> seconds per step; kept in the workspace's calibration cache when the
    workspace exists (a read command creates none). Trains in ``<workspace>/rehearsal/`` (its
    stand-in data and weights are the rehearsal's), else in a temporary directory, removed after.
    A config that fails is said and skipped: the rehearsal is the tool that explains failures."""
    from runner.orchestrate.trial import trial_device

    task = session.task
    if task.cost is None or task.rehearsal_config is None:
        say(f"calibration: task '{task.name}' lacks {'cost' if task.cost is None else 'rehearsal_config'}: "
            "estimates come from finished runs only")
        return {}
    firsts: dict[str, tuple[str, Any]] = {}
    shared: dict[str, int] = {}
    for label, config in trials:
        key = work_of(task, config).key
        firsts.setdefault(key, (label, config))
        shared[key] = shared.get(key, 0) + 1
    if not firsts:
        return {}
    device = trial_device(device or getattr(next(iter(firsts.values()))[1], "device", None))
    keep = session.workspace.is_dir()
    root = Path(tempfile.mkdtemp(prefix="ablate-calibrate-"))
    assets = session.workspace / REHEARSAL_DIR if keep else root
    rates: dict[str, float] = {}
    try:
        for n, (key, (label, config)) in enumerate(firsts.items(), 1):
            started = time.perf_counter()
            try:
                seconds = _time_steps(task, config, assets, root / f"run{n}", device)
            except Exception as exc:  # noqa: BLE001 - a config that does not run: said, skipped
                say(f"calibration {n}/{len(firsts)}: {label}: failed ({failure_reason(exc)}); "
                    "`ablate run --rehearse` says more")
                continue
            if seconds is not None:
                rates[key] = seconds
            more = f" (and {shared[key] - 1} more trials of its model and input size)" if shared[key] > 1 else ""
            say(f"calibration {n}/{len(firsts)}: {label}{more}: "
                f"{'?' if seconds is None else f'{seconds:.2f}'} s/step on {device} "
                f"({time.perf_counter() - started:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not record_calibration(session.workspace, rates, device) and rates:
        say(f"calibration: not kept (workspace {session.workspace} does not exist)")
    return rates


def _time_steps(task: Task, config: Any, assets: Path, run_dir: Path, device: str) -> Optional[float]:
    shrunk, _notes = shrink(task, config)
    recorder = _Rows()
    ctx = TrialContext(run_dir=run_dir, workspace=assets, device=device, seed=getattr(shrunk, "seed", 0),
                       recorder=recorder, rehearsal=True)
    ready = task.prepare(shrunk, ctx) if task.prepare is not None else shrunk
    task.fit(ready, ctx)
    ctx.flush()
    return step_seconds((row.step, row.wall_time_s) for row in recorder.rows)

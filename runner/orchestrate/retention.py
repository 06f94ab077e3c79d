"""What a finished trial keeps on disk (``checkpoints: {keep: final|all|none}``), and ``ablate gc``.

Why: every finished trial used to keep its full checkpoint, optimizer state included (about
200 MB for a tiny ResNet-18 trial), which only a resume needs. A finished trial is never resumed,
so once the store says it is ``done`` (or ``pruned``: terminal too) its run directory keeps:

* ``final`` (the default): ``weights.pt``, the task's ``final_weights(state)`` of its last
  checkpoint in the checkpoint's format (``{"ablate": position, "task": weights}``: enough to
  evaluate or fine-tune); a task without that hook keeps its full checkpoint;
* ``all``: the full ``checkpoint.pt``;
* ``none``: neither.

A trial that is not finished (running, interrupted, failed: ``--retry-failed`` resumes it,
pending) keeps the full checkpoint it resumes from: nothing here touches it. The worker applies
the policy right after the store recorded the trial done; :func:`collect_garbage` applies it to
a whole workspace (runs finished before the policy, or under another one).

Crash contract: the weights are written to a temporary file and renamed before the checkpoint is
removed, so a kill at any point leaves the full checkpoint, the weights, or both, never neither
(with ``final``). Only runs the store says are finished are touched, so a concurrent ``ablate
run`` loses nothing it resumes from. A failure here (a full disk, an unreadable checkpoint) never
changes a trial's outcome: the file is left as it was, ``ablate gc`` tries again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from runner.orchestrate.context import (CHECKPOINT_NAME, CheckpointError, checkpoint_path, read_checkpoint,
                                        write_checkpoint)

log = logging.getLogger(__name__)

WEIGHTS_NAME = "weights.pt"
FINISHED = ("done", "pruned")  # never trained again: what a resume needs is no longer needed
_LEFTOVERS = (f".{CHECKPOINT_NAME}.*.tmp", f".{WEIGHTS_NAME}.*.tmp")  # killed writes


@dataclass
class Retained:
    """What applying the policy to one run directory did."""

    freed: int = 0            # bytes
    removed: list[str] = field(default_factory=list)
    wrote: Optional[str] = None
    note: Optional[str] = None  # why a file the policy would remove was kept


def retain(run_dir: Path, keep: str, task: Any) -> Retained:
    """Apply ``keep`` to the directory of a finished run (see the module docstring). Idempotent."""
    run_dir = Path(run_dir)
    done = Retained()
    for pattern in _LEFTOVERS:
        for leftover in run_dir.glob(pattern):
            _remove(leftover, done)
    checkpoint = checkpoint_path(run_dir)
    if keep == "none":
        for path in (checkpoint, run_dir / WEIGHTS_NAME):
            _remove(path, done)
    elif keep == "final" and checkpoint.exists():
        if task.final_weights is None:
            done.note = f"task '{task.name}' has no final_weights: its full checkpoint is kept"
        else:
            _to_final_weights(run_dir, task, done)
    return done


def _to_final_weights(run_dir: Path, task: Any, done: Retained) -> None:
    checkpoint = checkpoint_path(run_dir)
    try:
        saved = read_checkpoint(run_dir)
    except CheckpointError as error:
        if checkpoint.exists():  # else another process reduced it meanwhile
            done.note = f"{error}: kept"
        return
    if saved is None:
        return
    size = _size(checkpoint)
    try:
        weights = write_checkpoint(run_dir, saved.position, task.final_weights(saved.state), name=WEIGHTS_NAME)
    except Exception as exc:  # noqa: BLE001 - a full disk, the task's hook: the checkpoint stays
        done.note = f"final weights not written ({type(exc).__name__}: {exc}): full checkpoint kept"
        return
    checkpoint.unlink(missing_ok=True)
    done.removed.append(checkpoint.name)
    done.wrote = weights.name
    done.freed += size - _size(weights)


def _remove(path: Path, done: Retained) -> None:
    size = _size(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    done.removed.append(path.name)
    done.freed += size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def retain_finished(run_dir: Path, keep: str, task: Any) -> None:
    """The worker's call once the store says the run is finished: never raises (see the module
    docstring), says in the log what it could not do."""
    try:
        done = retain(run_dir, keep, task)
    except Exception as exc:  # noqa: BLE001 - the trial is done whatever happens to its files
        log.warning("%s: checkpoints: keep %s not applied: %s", Path(run_dir).name, keep, exc)
        return
    if done.note and task.final_weights is not None:
        log.warning("%s: %s", Path(run_dir).name, done.note)


@dataclass
class GarbageReport:
    """What :func:`collect_garbage` did (or would do, ``dry_run``) to a workspace."""

    keep: str
    before: int = 0                    # bytes in the workspace
    after: int = 0
    freed: int = 0
    reduced: int = 0                   # finished runs whose files changed
    unfinished: int = 0                # run directories left alone: running, interrupted, failed, pending
    unknown: int = 0                   # run directories the store does not know, or another task's
    notes: list[str] = field(default_factory=list)

    def lines(self, dry_run: bool = False) -> list[str]:
        """What ``ablate gc`` prints."""
        verb = "would free" if dry_run else "freed"
        out = [f"checkpoints: keep {self.keep}: {verb} {self.freed:,} bytes ({_human(self.freed)}) in "
               f"{self.reduced} finished run{'s' if self.reduced != 1 else ''}; left alone: {self.unfinished} "
               f"unfinished (they resume from their checkpoints), {self.unknown} not this study file's task's "
               "or not in the result store",
               f"workspace: {self.before:,} -> {self.after:,} bytes ({_human(self.before)} -> {_human(self.after)})"
               + (" once the final weights are written" if dry_run and self.keep == "final" else "")]
        return out + self.notes


def collect_garbage(session: Any, dry_run: bool = False) -> GarbageReport:
    """Apply the study file's ``checkpoints:`` policy to every finished run of the workspace
    (statuses read from the result store; nothing else is touched). ``dry_run``: count what the
    finished runs' files the policy removes hold, change nothing."""
    keep, task = session.plan.policies.keep, session.task
    report = GarbageReport(keep, before=directory_size(session.workspace))
    root = Path(session.workspace) / "runs"
    dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    runs = session.store.runs([p.name for p in dirs])
    for run_dir in dirs:
        run = runs.get(run_dir.name)
        if run is None or run.task != task.name:
            report.unknown += 1
        elif run.status not in FINISHED:
            report.unfinished += 1
        else:
            done = _would_remove(run_dir, keep, task) if dry_run else retain(run_dir, keep, task)
            report.reduced += bool(done.removed)
            report.freed += done.freed
            if done.note:
                report.notes.append(f"{run_dir.name}: {done.note}")
    report.after = report.before - report.freed if dry_run else directory_size(session.workspace)
    return report


def _would_remove(run_dir: Path, keep: str, task: Any) -> Retained:
    """What :func:`retain` would remove (its final weights, still to be written, not subtracted)."""
    done = Retained()
    paths = [p for pattern in _LEFTOVERS for p in run_dir.glob(pattern)]
    checkpoint = checkpoint_path(run_dir)
    if keep == "none":
        paths += [checkpoint, run_dir / WEIGHTS_NAME]
    elif keep == "final" and checkpoint.exists():
        if task.final_weights is None:
            done.note = f"task '{task.name}' has no final_weights: its full checkpoint is kept"
        else:
            paths.append(checkpoint)
    for path in paths:
        if path.exists():
            done.removed.append(path.name)
            done.freed += _size(path)
    return done


def _human(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KB", "MB", "GB"):
        if abs(value) < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def directory_size(path: Path) -> int:
    """Bytes of the files below ``path`` (apparent sizes, as ``du -sb`` counts them)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total

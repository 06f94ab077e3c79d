"""What a fault does to one trial, and what it does to the whole run.

* A checkpoint that cannot be read (truncated, garbage, written by another version, or not
  fitting the model: the task raises ``ctx.CheckpointError``) is set aside as
  ``checkpoint.pt.corrupt-<n>`` and the trial trains again from scratch; the reason is stored with
  the run (``ablate status`` shows it). Restarting, not failing: the trial's config is not at
  fault, and its result from scratch is the one an uninterrupted run would have had.
* A full disk (ENOSPC, EDQUOT, SQLite's "database or disk is full") is not the trial's failure
  either: the run is handed back ``interrupted`` with the reason, its tracker run ended KILLED and
  the worker stops with :class:`RunStopped`. Writing that down needs a little space, so every
  worker keeps ``<workspace>/.disk-reserve`` and deletes it at the moment the disk is full.
* Any other exception of the task is the trial's failure, recorded with a one-line reason
  (:func:`failure_reason`).
"""
from __future__ import annotations

import errno
import logging
import os
import traceback
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

DISK_RESERVE = ".disk-reserve"
DISK_RESERVE_BYTES = 4 << 20  # a few hundred SQLite pages: the hand-back and the tracker's end, with room


class RunStopped(Exception):
    """The whole run stops, not one trial: the disk is full. The running trial was handed back
    ``interrupted`` and resumes once there is space. Exit code 1 (not 2: nothing the user typed
    or pointed at is wrong, and 1 already means "the run did not complete, see why")."""

    exit_code = 1


def disk_full(exc: BaseException) -> Optional[str]:
    """The OS's (or the database's) words if ``exc`` is a full disk or an exhausted quota, else
    None. Torch's writer, SQLite, SQLAlchemy and MLflow each wrap it differently, so the chain is
    followed (``__cause__``, ``__context__``, a SQLAlchemy error's ``orig``); PostgreSQL and
    SQLite say so only in words."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        text = str(e)
        for words in ("database or disk is full", "No space left on device", "Disk quota exceeded"):
            if words in text:
                return words
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return None


def ensure_disk_reserve(workspace: Path) -> None:
    """Keep ``<workspace>/.disk-reserve`` (a few MiB), deleted by :func:`release_disk_reserve`
    when the disk is full so that handing the trial back can still be written. A disk already
    too full for it stops the run before anything is claimed."""
    path = Path(workspace) / DISK_RESERVE
    if path.exists():
        return
    from runner.atomic import write_bytes_atomic

    try:  # random bytes: a compressing file system would store zeros in no space at all
        write_bytes_atomic(path, os.urandom(DISK_RESERVE_BYTES))
    except OSError as exc:
        if disk_full(exc):
            raise RunStopped(f"disk full: cannot write {path} ({exc.strerror}); free space in "
                             f"{workspace} and run again") from None
        raise


def release_disk_reserve(workspace: Path) -> None:
    Path(workspace, DISK_RESERVE).unlink(missing_ok=True)


def set_aside(path: Path, reason: str) -> str:
    """Move an unreadable checkpoint out of the way (kept for inspection, never read again) and
    say so in one line: the trial trains again from scratch."""
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, target)
    note = f"checkpoint {reason}; set aside as {target.name}, trained again from scratch"
    log.warning("%s: %s", path.parent.name, note)
    return note


def failure_reason(exc: BaseException) -> str:
    """One line: the exception and where it was raised (out of memory said first)."""
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        text = f"out of memory: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno})"
    return text


def safe(fn) -> None:
    """Best effort on the way out: a failure is logged, never raised over the real outcome."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        log.warning("ignored on the way out: %s", exc)

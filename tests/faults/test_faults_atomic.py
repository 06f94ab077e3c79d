"""Fault 7: a crash in the middle of a write never leaves a half-written file to be loaded.

Checkpoints (the trial context's ``write_checkpoint``, whatever the task), reports
(runner.atomic.write_bytes_atomic) and exported files / configs (runner.atomic, used by ``ablate
results --output`` and each trial's config.yaml) are written to a temporary file and renamed. Tested by an exception half-way through the write and
by SIGKILL of a process that rewrites the file in a loop (seeded random kill points). (That a
worker removes the temporary leftover of a killed checkpoint write before it resumes is tested
in test_faults_kill.py.)
"""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.faults.fault_helpers import atomic_writer, checkpoint_writer

KILLS = 6


def _kill_loop(context, target, args, path: Path, check, seed: int):
    rng = random.Random(seed)
    seen = []
    for _ in range(KILLS):
        p = context.Process(target=target, args=args)
        p.start()
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        seen.append(check(path))  # whole, never torn
    return seen


def test_checkpoint_exception_mid_write_keeps_the_previous(tmp_path, monkeypatch):
    from runner.orchestrate.context import Position, read_checkpoint, write_checkpoint

    path = write_checkpoint(tmp_path, Position(1, 4, 2.0), {"blob": torch.ones(1000)})
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # f: the open temporary file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError):
        write_checkpoint(tmp_path, Position(2, 8, 4.0), {"blob": torch.zeros(1000)})
    monkeypatch.undo()
    resume = read_checkpoint(tmp_path)  # what a resume reads: the previous checkpoint
    assert resume.position == Position(1, 4, 2.0)
    assert torch.equal(resume.state["blob"], torch.ones(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the half-written temporary is gone


def test_checkpoint_killed_mid_write_is_never_torn(tmp_path, forkserver):
    from runner.orchestrate.context import read_checkpoint

    path = tmp_path / "checkpoint.pt"

    def check(p):
        resume = read_checkpoint(p.parent)  # raises CheckpointError on a torn file
        blob, i = resume.state["blob"], resume.position.epoch
        assert float(blob.sum()) == resume.state["sum"] == i * blob.numel() and resume.position.step == i
        return i

    epochs = _kill_loop(forkserver, checkpoint_writer, (str(tmp_path), 8_000_000), path, check, seed=7)
    torn = sorted(p.name for p in tmp_path.iterdir() if p != path)  # writes the kills cut short
    print(f"\ncheckpoint writer killed {KILLS} times; loaded whole checkpoints of epochs {epochs}; "
          f"half-written temporaries left (never loaded): {len(torn)}")
    # Whether a kill lands inside a write depends on timing; what may never happen is a torn
    # checkpoint.pt (check() above) or a leftover under any other name than the writer's
    # temporaries (which a resuming worker removes: test_faults_kill.py).
    assert all(name.startswith(".checkpoint.pt.") and name.endswith(".tmp") for name in torn), torn


def test_atomic_write_killed_mid_write_is_never_torn(tmp_path, forkserver):
    path = tmp_path / "results.csv"
    n = 8_000_000

    def check(p):
        data = p.read_bytes()
        assert len(data) == n and data.count(data[:1]) == n  # one complete version
        return data[:1]

    _kill_loop(forkserver, atomic_writer, (str(path), n), path, check, seed=11)


@pytest.mark.parametrize("failing", ["fsync", "chmod"])  # while writing / after, before the rename
def test_atomic_write_exception_mid_write_keeps_old_and_cleans_up(tmp_path, monkeypatch, failing):
    """What reports, exports and checkpoints use: the old file stays whole, no temporary is left."""
    from runner.atomic import write_bytes_atomic

    path = tmp_path / "report.md"
    write_bytes_atomic(path, b"old report\n")

    def fail(*_args, **_kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError):
        write_bytes_atomic(path, b"new report " * 10000)
    monkeypatch.undo()
    assert path.read_bytes() == b"old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary left behind

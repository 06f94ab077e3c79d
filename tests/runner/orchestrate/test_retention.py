"""Checkpoint retention (issue 12): a finished trial keeps what ``checkpoints: {keep: ...}`` says
(``final``, the default: its final weights; ``all``: the full checkpoint; ``none``: nothing), an
unfinished one keeps the full checkpoint it resumes from, and ``ablate gc`` applies the policy to
an existing workspace: it frees what the policy no longer needs and never touches a trial that
still resumes.

The task is the shared fake task with a ``final_weights`` hook, in a module beside the study file
(as a user's task would be)."""
from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.orchestrate.context import Position, write_checkpoint
from runner.orchestrate.retention import WEIGHTS_NAME, retain
from tests.faults.fault_helpers import wait_for
from tests.support.cli import run_cli, start_cli
from tests.support.fake_task import read_log

TASK = '''\
from tests.support.fake_task import *  # noqa: F401,F403 - a user's task around the shared fake one


def final_weights(state):
    return {"weights": "final", "epoch": state["epoch"]}
'''


def study_text(keep: str | None, log_dir: Path) -> str:
    keys = f"checkpoints: {{keep: {keep}}}\n" if keep else ""
    return f"""\
name: demo
task: kept_task
{keys}defaults: {{log_dir: {log_dir}}}
studies:
  - name: lr
    variants:
      - {{name: fast, set: {{lr: 0.01}}}}
      - {{name: slow, set: {{lr: 0.02, step_s: 1.0}}}}
"""


def setup(directory: Path, keep: str | None) -> Path:
    (directory / "kept_task.py").write_text(TASK)
    (directory / "log").mkdir(exist_ok=True)
    path = directory / "studies.yaml"
    path.write_text(study_text(keep, directory / "log"))
    return path


def ablate(directory: Path, *args) -> str:
    done = run_cli(*args, cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_rows(directory: Path) -> dict[str, str]:
    """{hash: status} of every run; the slow variant's hash is the one with ``step_s``."""
    db = sqlite3.connect(f"file:{directory / 'ablate-runs' / 'ablate.db'}?mode=ro", uri=True)
    try:
        return {h: (status, '"step_s": 1.0' in config) for h, status, config in
                db.execute("SELECT hash, status, config_json FROM runs")}
    finally:
        db.close()


def files(directory: Path, run_hash: str) -> set[str]:
    return {p.name for p in (directory / "ablate-runs" / "runs" / run_hash).iterdir()} - {"config.yaml"}


def load(path: Path):
    import torch

    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("keep, kept", [(None, {WEIGHTS_NAME}), ("all", {"checkpoint.pt"}), ("none", set())])
def test_a_finished_trial_keeps_what_the_policy_says(tmp_path, keep, kept):
    study = setup(tmp_path, keep)
    study.write_text(study.read_text().replace("step_s: 1.0", "step_s: 0"))
    ablate(tmp_path, "run", study, "--no-progress", "--tracking-uri", "none")
    hashes = list(run_rows(tmp_path))
    assert len(hashes) == 2
    for run_hash in hashes:
        assert files(tmp_path, run_hash) == kept
    if keep is None:  # the task's final weights, in the checkpoint's format: no optimizer state
        saved = load(tmp_path / "ablate-runs" / "runs" / hashes[0] / WEIGHTS_NAME)
        assert saved["task"] == {"weights": "final", "epoch": 2} and saved["ablate"]["epoch"] == 2


def test_gc_frees_what_the_policy_no_longer_needs_and_a_resumed_trial_still_resumes(tmp_path):
    """A workspace trained under ``keep: all``: one trial done, one interrupted (Ctrl-C after its
    first epoch). ``ablate gc`` under the default policy reduces the done trial to its final
    weights and leaves the interrupted one's checkpoint as it was; the next run resumes it there."""
    study = setup(tmp_path, "all")
    log = tmp_path / "log"
    proc = start_cli("run", study, "--no-progress", "--tracking-uri", "none", cwd=tmp_path, log=tmp_path / "run.log")
    try:
        def slow_checkpointed():
            rows = run_rows(tmp_path) if (tmp_path / "ablate-runs" / "ablate.db").exists() else {}
            slow = [h for h, (_, is_slow) in rows.items() if is_slow]
            return slow and ("ckpt", 3) in read_log(log, slow[0]) and slow[0]
        slow = wait_for(slow_checkpointed, 300, "the slow trial's first checkpoint")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = run_rows(tmp_path)
    (fast,) = [h for h, (_, is_slow) in rows.items() if not is_slow]
    assert rows[fast][0] == "done" and rows[slow][0] == "interrupted"
    ws = tmp_path / "ablate-runs"
    assert files(tmp_path, fast) == files(tmp_path, slow) == {"checkpoint.pt"}
    resume_from = (ws / "runs" / slow / "checkpoint.pt").read_bytes()
    at_step = load(ws / "runs" / slow / "checkpoint.pt")["ablate"]["step"]
    assert at_step >= 3  # its first epoch, or where Ctrl-C stopped it
    fast_size = (ws / "runs" / fast / "checkpoint.pt").stat().st_size

    study.write_text(study_text(None, log))  # the default policy now: keep final
    out = ablate(tmp_path, "gc", study, "--dry-run")
    assert f"would free {fast_size:,} bytes" in out and "in 1 finished run;" in out, out
    assert files(tmp_path, fast) == {"checkpoint.pt"}  # a dry run changes nothing

    out = ablate(tmp_path, "gc", study)
    freed = fast_size - (ws / "runs" / fast / WEIGHTS_NAME).stat().st_size
    assert f"checkpoints: keep final: freed {freed:,} bytes" in out and "1 unfinished" in out, out
    before, after = (int(g.replace(",", "")) for g in re.search(r"workspace: ([\d,]+) -> ([\d,]+) bytes",
                                                                 out).groups())
    assert before - after == freed  # (a fake checkpoint is tiny: the unit tests below free real bytes)
    assert files(tmp_path, fast) == {WEIGHTS_NAME}
    assert (ws / "runs" / slow / "checkpoint.pt").read_bytes() == resume_from  # untouched: it resumes from it
    assert "freed 0 bytes" in ablate(tmp_path, "gc", study)  # nothing left to free

    ablate(tmp_path, "run", study, "--no-progress", "--tracking-uri", "none")
    starts = [step for kind, step in read_log(log, slow) if kind == "start"]
    assert starts == [0, at_step]  # resumed at its checkpoint, not from scratch
    assert run_rows(tmp_path)[slow][0] == "done" and files(tmp_path, slow) == {WEIGHTS_NAME}


def _task(final_weights=None):
    return SimpleNamespace(name="t", final_weights=final_weights)


def _checkpointed(tmp_path) -> Path:
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, Position(2, 6, 1.5), {"model": [1.0] * 1000, "optimizer": [0.0] * 2000})
    return run_dir


def test_final_weights_replace_the_checkpoint_once_and_a_task_without_the_hook_keeps_it(tmp_path):
    run_dir = _checkpointed(tmp_path)
    size = (run_dir / "checkpoint.pt").stat().st_size
    done = retain(run_dir, "final", _task(lambda state: {"model": state["model"]}))
    assert {p.name for p in run_dir.iterdir()} == {WEIGHTS_NAME}
    assert done.freed == size - (run_dir / WEIGHTS_NAME).stat().st_size > 0
    assert load(run_dir / WEIGHTS_NAME) == {"ablate": {"epoch": 2, "step": 6, "wall_time_s": 1.5},
                                            "task": {"model": [1.0] * 1000}}
    assert retain(run_dir, "final", _task(lambda state: 1 / 0)).freed == 0  # idempotent

    other = _checkpointed(tmp_path / "other")
    done = retain(other, "final", _task())
    assert {p.name for p in other.iterdir()} == {"checkpoint.pt"} and "has no final_weights" in done.note


def test_a_failing_final_weights_hook_keeps_the_full_checkpoint(tmp_path):
    """The task's hook raising (a bug, a full disk while writing) leaves the checkpoint as it was
    and says why; nothing half-written stays behind."""
    run_dir = _checkpointed(tmp_path)
    before = (run_dir / "checkpoint.pt").read_bytes()
    done = retain(run_dir, "final", _task(lambda state: state["no such key"]))
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert {p.name for p in run_dir.iterdir()} == {"checkpoint.pt"}
    assert "final weights not written (KeyError" in done.note and done.freed == 0

"""Fault: the disk fills up while a trial runs (issue 11, fault 10).

The workspace is a small tmpfs of its own; in the middle of the second trial the fake task
(``fault: fill``) fills it to the last byte (as another process would), so the step rows, the MLflow points and
the next checkpoint all meet ENOSPC / "database or disk is full" for real. The run stops with one
line and exit code 1, the trial is ``interrupted`` (not failed, not left ``running``) with the
reason, its MLflow run is KILLED and its last checkpoint is intact; once there is space again the
next ``ablate run`` resumes it from that checkpoint. Before the fix the failure could not be
recorded either: a chained traceback, the trial ``running`` until its lease expired, its MLflow
run RUNNING.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.faults.fault_helpers import mlflow_runs_of, mlflow_status, runs_by_variant, step_numbers
from tests.support.cli import invoke_cli
from tests.support.fake_task import read_log
from tests.support.study_files import fake_study


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs at ``tmp_path / "ws"`` (root only; skipped where mount is refused)."""
    mount_point = tmp_path / "ws"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a small disk: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:  # lazy: the MLflow and SQLite engines of this process may still hold files open
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("stores_elsewhere", [False, True], ids=["stores-on-the-full-disk", "checkpoints-only"])
def test_full_disk_stops_the_run_and_hands_the_trial_back(tmp_path, small_disk, capsys, stores_elsewhere):
    """stores-on-the-full-disk: the result and MLflow databases are in the workspace, and SQLite
    meets the full disk first. checkpoints-only: ``--db`` and ``--tracking-uri`` elsewhere, and
    the first write that fails is a checkpoint (torch.save)."""
    from runner.orchestrate.context import read_checkpoint

    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "disk.yaml"  # the second trial fills the disk at the first step of its epoch 2
    study.write_text(fake_study("disk", [("s1", {"variants": {
        "first": {"lr": 0.01}, "full": {"lr": 0.02, "fault": "fill", "fault_at_step": 4}, "third": {"lr": 0.03}}})],
        log_dir=log_dir, epochs=2, steps_per_epoch=3, step_s=0.01))
    ws = small_disk
    args = ["run", study, "--workspace", ws, "--no-progress", "--lease", "5"]
    stores = ws  # where the helpers find ablate.db and mlflow.db
    if stores_elsewhere:
        stores = tmp_path / "stores"
        stores.mkdir()
        args += ["--db", f"sqlite:///{stores}/ablate.db", "--tracking-uri", f"sqlite:///{stores}/mlflow.db"]

    code, out, err = invoke_cli(*args, capsys=capsys)
    assert code == 1, out + err
    assert "Traceback" not in out + err, out + err
    said = [line for line in err.splitlines() if line.startswith("ablate: ")]
    assert len(said) == 1 and "disk full" in said[0] and "resumes from its last checkpoint" in said[0], err

    runs = runs_by_variant(stores)
    first, full, third = (runs[("s1", name, 0)] for name in ("first", "full", "third"))
    assert first.status == "done"                   # what finished before stays finished
    assert full.status == "interrupted" and full.lease_expires is None, full
    assert "disk full" in full.error, full.error
    if stores_elsewhere:  # the checkpoint's write said so (torch's own writer only says "iostream error")
        assert "No space left on device" in full.error, full.error
    assert mlflow_status(stores, full.tracking_run_id) == "KILLED"
    assert third.status == "pending"                # the run stopped: nothing else started
    position = read_checkpoint(ws / "runs" / full.hash).position
    assert (position.epoch, position.step) == (1, 3)  # epoch 1's checkpoint, whole
    status = ["status", study, "--workspace", ws] + (["--db", f"sqlite:///{stores}/ablate.db"] if stores_elsewhere else [])
    assert "disk full" in " ".join(invoke_cli(*status, capsys=capsys)[1].split())

    (ws / "filler").unlink()  # the user makes room
    (log_dir / "fixed").touch()
    code, out, err = invoke_cli(*args, capsys=capsys)
    assert code == 0, out + err
    after = runs_by_variant(stores)
    assert {k: r.status for k, r in after.items()} == {k: "done" for k in after}
    resumed = after[("s1", "full", 0)]
    assert resumed.attempts == 2 and resumed.tracking_run_id == full.tracking_run_id
    assert [e for e in read_log(log_dir, full.hash) if e[0] == "start"] == [("start", 0), ("start", 3)]
    assert mlflow_runs_of(stores, full.hash) == [(full.tracking_run_id, "FINISHED")]
    assert step_numbers(stores, full.hash) == list(range(1, 7))

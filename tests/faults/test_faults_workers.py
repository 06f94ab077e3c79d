"""Fault: a worker process of ``ablate run --workers N`` dies, or the ``ablate run`` process itself
does (issue 11, fault 4).

* A worker killed by SIGKILL (as by the OOM killer) or ended by an exception no handler expects:
  ``ablate run`` exits 1 with one line per dead worker naming it and how it died, and the trial
  it held is handed back ``interrupted`` with that reason at once (its MLflow run KILLED), not
  left ``running`` until its lease expires. Before the fix the run exited 0.
* ``kill -9`` of the ``ablate run`` process: its workers stop as on SIGTERM (checkpoint, trial
  ``interrupted``, MLflow run KILLED) and exit, instead of training the chain on in the background.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults.fault_helpers import db_rows, mlflow_status, runs_by_variant, tiny_study, wait_for
from tests.support.cli import invoke_cli, start_cli
from tests.support.study_files import fake_study


@pytest.mark.parametrize("kind,how", [("kill", "killed by SIGKILL"), ("escape", "Escape: the worker met an error")],
                         ids=["sigkill", "exception"])
def test_a_dead_worker_fails_the_run_and_its_trial_is_handed_back(tmp_path, capsys, kind, how):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "dead.yaml"  # the fake task's fault ``kind`` in one trial of three: it dies on every attempt
    study.write_text(fake_study("dead", [("s1", {"variants": {"lr=0.001": {"lr": 0.001},
                                                              "lr=0.002": {"lr": 0.002, "fault": kind},
                                                              "lr=0.003": {"lr": 0.003}}})],
                                log_dir=log_dir, epochs=2, steps_per_epoch=3, step_s=0.05))
    ws = tmp_path / "ws"
    args = ["run", study, "--workspace", ws, "--no-progress", "--workers", "2", "--lease", "60"]

    code, out, err = invoke_cli(*args, capsys=capsys)
    assert code == 1, out + err
    # both workers took the handed-back trial in turn and died on it; each is named in one line
    died = sorted(line for line in err.splitlines() if line.startswith("ablate: worker "))
    assert [line.split()[2] for line in died] == ["w0", "w1"], err
    assert all(" died: " in line and how in line for line in died), err
    if kind == "kill":
        assert "Traceback" not in out + err, out + err
    poisoned = runs_by_variant(ws)[("s1", "lr=0.002", 0)]
    assert poisoned.status == "interrupted" and poisoned.lease_expires is None, poisoned
    assert how in poisoned.error, poisoned.error  # the reason, shown by status
    assert mlflow_status(ws, poisoned.tracking_run_id) == "KILLED"
    assert not db_rows(ws, "SELECT hash FROM runs WHERE status = 'running'")

    (log_dir / "fixed").touch()  # the cause is fixed: a plain rerun trains everything left
    code, out, err = invoke_cli("run", study, "--workspace", ws, "--no-progress", capsys=capsys)
    assert code == 0, out + err
    assert {r.status for r in runs_by_variant(ws).values()} == {"done"}


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (its children running multiprocessing's spawn_main)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited; a zombie waits for whoever adopted it to reap it


# long enough that both workers are mid-trial when the parent dies (the test kills it long before
# a trial could finish, so the length costs nothing)
EPOCHS, STEPS_PER_EPOCH = 20, 24


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_workers_stop_when_the_ablate_run_process_is_killed(tmp_path):
    study = tmp_path / "orphans.yaml"
    study.write_text(tiny_study("orphans", "  - name: s1\n    grid: {lr: [0.01, 0.02, 0.03]}\n", epochs=EPOCHS,
                                steps_per_epoch=STEPS_PER_EPOCH, synthetic_train=2 * STEPS_PER_EPOCH))
    ws = tmp_path / "ws"
    proc = start_cli("run", study, "--workspace", ws, "--no-progress", "--lease", "60", "--workers", "2",
                     cwd=tmp_path, log=tmp_path / "run.log")
    workers: list[int] = []
    try:
        # in training: running, with its first epoch's checkpoint in place (the runs table's step is
        # only written by the heartbeat, every third of the lease)
        running = wait_for(lambda: (rows := db_rows(ws, "SELECT * FROM runs WHERE status = 'running'"))
                           and len(rows) == 2
                           and all((ws / "runs" / r["hash"] / "checkpoint.pt").exists() for r in rows) and rows,
                           300, "two trials in training", interval=0.05)
        workers = _workers_of(proc.pid)
        assert len(workers) == 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: all(_gone(p) for p in workers), 60, "the orphaned workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:  # a failed test leaves no worker training behind
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
    for row in running:
        after = db_rows(ws, "SELECT * FROM runs WHERE hash = ?", (row["hash"],))[0]
        assert after["status"] == "interrupted" and after["lease_expires"] is None, after
        assert "died" in after["error"] or "SIGTERM" in after["error"], after["error"]
        assert (ws / "runs" / row["hash"] / "checkpoint.pt").exists()  # resumable
        assert mlflow_status(ws, row["tracking_run_id"]) == "KILLED"
    assert not db_rows(ws, "SELECT hash FROM runs WHERE status IN ('running', 'done')")  # nothing trained on

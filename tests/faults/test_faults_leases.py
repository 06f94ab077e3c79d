"""Faults of ownership: every claim can be taken over once its lease expires, and a worker that
lost one writes nothing more (issue 11, faults 12 and 13), and a resumed trial's MLflow history
holds each step once.

* A worker killed inside Optuna's ``ask`` (its search cell claimed, the Optuna trial created,
  the cell not bound yet): the claim expires, another worker samples the cell again and ends the
  orphaned Optuna trial FAIL; the search finishes. Before the fix the cell stayed claimed
  forever and every later run waited on "1 pending".
* A worker stopped (SIGSTOP) in the middle of a checkpoint write, past its lease: another worker
  takes the trial over (removing the half-written file). Continued (SIGCONT) while the new owner
  trains, the old worker notices it lost the run and writes nothing: no FAILED status, no error
  tag on the MLflow run the new owner is training. Before the fix it tagged that run with its
  error and ended it FAILED under the new owner.
* kill -9 after MLflow received steps past the last checkpoint: the resumed attempt does not log
  them again.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

from bench.fleet import worker_main
from tests.faults.fault_helpers import (db_rows, mlflow_metric_steps, mlflow_runs_of, mlflow_tags, prepared, wait_for,
                                        worker_blocked_in_ask)
from tests.support.fake_task import read_log
from tests.support.study_files import fake_study

SEARCH_STUDY = """\
name: cells
task: tests.support.fake_task
defaults: {epochs: 2, steps_per_epoch: 2}
studies:
  - name: lr_search
    search:
      sampler: random
      n_trials: 3
      space:
        lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
"""


def _run_in_thread(session, options, within_s: float):
    """``run_worker`` in a thread; stopped (and reported stuck) if it has not finished in time."""
    from runner.orchestrate.worker import StopFlag, run_worker

    stop, summary = StopFlag(), {}
    thread = threading.Thread(target=lambda: summary.update(result=run_worker(session, options, stop)))
    thread.start()
    thread.join(within_s)
    stuck = thread.is_alive()
    stop.set("test")
    thread.join(60)
    assert not stuck, f"the worker did not finish within {within_s}s: a cell is stuck"
    return summary["result"]


def test_a_search_cell_claimed_by_a_killed_worker_is_sampled_again(tmp_path, forkserver):
    import optuna

    from runner.orchestrate.search import CELL_ATTR
    from runner.orchestrate.worker import WorkerOptions

    study = tmp_path / "cells.yaml"
    study.write_text(SEARCH_STUDY)
    ws = tmp_path / "ws"
    session = prepared(study, ws)
    marker = tmp_path / "asked"
    victim = forkserver.Process(target=worker_blocked_in_ask, args=(str(study), str(ws), "victim", 1.0, 0.1,
                                                                     str(marker)))
    victim.start()
    try:
        wait_for(marker.exists, 120, "the victim inside Optuna's ask")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
    (claimed,) = db_rows(ws, "SELECT id, optuna_trial, run_hash FROM trials WHERE optuna_trial = -1")
    assert claimed["run_hash"] is None  # claimed, asked, never bound

    summary = _run_in_thread(session, WorkerOptions(worker_id="survivor", lease_s=30, poll_s=0.1), within_s=90)
    assert summary.trained == 3 and summary.failed == 0
    cells = db_rows(ws, "SELECT t.id, t.optuna_trial, t.optuna_study, r.status FROM trials t "
                        "JOIN runs r ON r.hash = t.run_hash")
    assert len(cells) == 3 and {c["status"] for c in cells} == {"done"}
    ostudy = optuna.load_study(study_name=cells[0]["optuna_study"], storage=session.optuna())
    by_state = {s: [t for t in ostudy.trials if t.state == s] for s in optuna.trial.TrialState}
    assert not by_state[optuna.trial.TrialState.RUNNING]  # nothing left RUNNING in Optuna
    (orphan,) = by_state[optuna.trial.TrialState.FAIL]     # the dead worker's trial, ended FAIL
    assert orphan.user_attrs[CELL_ATTR] == claimed["id"]
    assert sorted(c["optuna_trial"] for c in cells) == sorted(
        t.number for t in by_state[optuna.trial.TrialState.COMPLETE])


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _unlocked(ws: Path) -> bool:
    """Can the result and MLflow databases be written (no stopped process holds their lock)?"""
    for name in ("ablate.db", "mlflow.db"):
        db = sqlite3.connect(ws / name, timeout=2, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return False
        finally:
            db.close()
    return True


def _stop_outside_a_transaction(pid: int, ws: Path) -> None:
    """SIGSTOP ``pid``; again, until it is stopped at a moment none of its threads (heartbeat,
    MLflow writer) holds a database lock: stopped inside one, it would stop every other process too."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _state(pid) == "T", 60, f"process {pid} stopped")
        if _unlocked(ws):
            return
        os.kill(pid, signal.SIGCONT)


def test_a_worker_stopped_past_its_lease_writes_nothing_when_continued(tmp_path, forkserver):
    ws, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "stall.yaml"
    study.write_text(fake_study("stall", [("s1", {"lr": [0.01]})], log_dir=log_dir, epochs=3, steps_per_epoch=4,
                                step_s=0.02, fault="stall"))
    prepared(study, ws).store.close()

    def start(worker_id):
        p = forkserver.Process(target=worker_main, name=worker_id, args=(
            str(study), str(ws), worker_id, 1.0, 0.1, str(tmp_path / f"{worker_id}.log")))
        p.start()
        return p

    old = start("old")
    new = None
    try:
        wait_for((log_dir / "gate-1.waiting").exists, 120, "the old owner inside its checkpoint write")
        (run,) = db_rows(ws, "SELECT hash, tracking_run_id FROM runs")
        assert list((ws / "runs" / run["hash"]).glob(".checkpoint.pt.*.tmp"))  # its half-written file
        _stop_outside_a_transaction(old.pid, ws)
        (log_dir / "gate-1").touch()  # once continued, it goes on with its write
        new = start("new")  # takes the run over once the old lease expires; waits after a step
        wait_for((log_dir / "gate-2.waiting").exists, 120, "the new owner training")
        assert db_rows(ws, "SELECT worker FROM runs")[0]["worker"] == "new"
        assert not list((ws / "runs" / run["hash"]).glob(".checkpoint.pt.*.tmp"))  # it removed the old one's

        os.kill(old.pid, signal.SIGCONT)
        wait_for(lambda: not old.is_alive() or mlflow_runs_of(ws, run["hash"])[0][1] != "RUNNING", 60,
                 "the old owner to react")
        # nothing of the old owner reached the run the new owner is training
        assert mlflow_runs_of(ws, run["hash"]) == [(run["tracking_run_id"], "RUNNING")]
        assert mlflow_tags(ws, run["tracking_run_id"]).get("ablate.error") is None
        (row,) = db_rows(ws, "SELECT status, worker, error FROM runs")
        assert (row["status"], row["worker"], row["error"]) == ("running", "new", None)
        old.join(60)
        assert old.exitcode == 3, (tmp_path / "old.log").read_text()  # stopped: it lost the run

        (log_dir / "gate-2").touch()
        new.join(120)
        assert new.exitcode == 0, (tmp_path / "new.log").read_text()
    finally:
        for p in (old, new):
            if p is not None and p.is_alive():
                os.kill(p.pid, signal.SIGCONT)  # a stopped process cannot die of SIGKILL until continued
                p.kill()
                p.join()
    (row,) = db_rows(ws, "SELECT status, attempts, error FROM runs")
    assert (row["status"], row["attempts"], row["error"]) == ("done", 2, None)
    assert mlflow_runs_of(ws, run["hash"]) == [(run["tracking_run_id"], "FINISHED")]
    assert "ablate.error" not in mlflow_tags(ws, run["tracking_run_id"])
    assert mlflow_metric_steps(ws, run["tracking_run_id"], "loss") == list(range(1, 13))


def test_a_resumed_trial_logs_each_step_to_mlflow_once(tmp_path, forkserver):
    from runner.orchestrate.worker import WorkerOptions

    ws, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "replay.yaml"  # an epoch (2.5 s) is longer than the MLflow writer's flush (2 s)
    study.write_text(fake_study("replay", [("s1", {"lr": [0.01]})], log_dir=log_dir, epochs=3, steps_per_epoch=10,
                                step_s=0.25))
    session = prepared(study, ws)
    worker = forkserver.Process(target=worker_main, args=(str(study), str(ws), "killed", 1.0, 0.1))
    worker.start()

    def past_the_checkpoint():
        rows = db_rows(ws, "SELECT hash, tracking_run_id FROM runs WHERE tracking_run_id IS NOT NULL")
        if not rows:
            return None
        ckpts = [s for e, s in read_log(log_dir, rows[0]["hash"]) if e == "ckpt"]
        logged = mlflow_metric_steps(ws, rows[0]["tracking_run_id"], "loss")
        return ckpts and logged and max(logged) > max(ckpts) + 1 and rows[0]

    try:
        run = wait_for(past_the_checkpoint, 120, "MLflow points past the last checkpoint", interval=0.05)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
    last_ckpt = max(s for e, s in read_log(log_dir, run["hash"]) if e == "ckpt")
    before = mlflow_metric_steps(ws, run["tracking_run_id"], "loss")
    assert max(before) > last_ckpt  # steps the resumed attempt computes again are in MLflow already

    summary = _run_in_thread(session, WorkerOptions(worker_id="resumer", lease_s=30, poll_s=0.1), within_s=90)
    assert summary.trained == 1
    assert [e for e in read_log(log_dir, run["hash"]) if e[0] == "start"][-1][1] == last_ckpt  # resumed there
    assert mlflow_metric_steps(ws, run["tracking_run_id"], "loss") == list(range(1, 31))  # each step once
    assert mlflow_metric_steps(ws, run["tracking_run_id"], "score") == [10, 20, 30]
    assert mlflow_runs_of(ws, run["hash"]) == [(run["tracking_run_id"], "FINISHED")]

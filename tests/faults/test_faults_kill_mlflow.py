"""``kill -9`` after a trial's steps reached MLflow past its last checkpoint: the resume replays
those steps (from the checkpoint), and MLflow, which cannot drop a point, must not get them twice.

A worker process (the fake trainer: a step every 0.1 s, each step logged, a checkpoint at each
epoch's end) is killed in its trial's second epoch once MLflow holds steps of that epoch; a
second worker takes the trial over when the lease expires and resumes it from the first epoch's
checkpoint. Every series of the trial's one MLflow run then has one point per step, as the result
store has one row per step.
"""
from __future__ import annotations

import os
import signal
import sqlite3

from fault_fakes import FakeTrainer, read_log, study_text, worker_main
from fault_helpers import mlflow_runs_of, runs_by_variant, step_rows, wait_for

STEPS, EPOCHS = 40, 2
LEASE_S = 1.5


def _mlflow_steps(workspace, run_id: str, key: str) -> list[int]:
    db = sqlite3.connect(workspace / "mlflow.db", timeout=60)
    try:
        return sorted(r[0] for r in db.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = ?",
                                               (run_id, key)))
    finally:
        db.close()


def test_kill_after_steps_reached_mlflow_past_the_checkpoint_logs_each_step_once(tmp_path, forkserver):
    from runner.orchestrate.scheduler import prepare_workspace
    from runner.orchestrate.session import Session

    workspace, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "replay.yaml"
    study.write_text(study_text("replay", [("s1", {"lr": [0.01]})], epochs=EPOCHS, steps=STEPS))
    session = Session.open(study, workspace=workspace)
    prepare_workspace(session)
    session.store.close()
    trainer = FakeTrainer(str(log_dir), step_s=0.1)

    def start(name):
        p = forkserver.Process(target=worker_main, name=name, args=(
            str(study), str(workspace), name, LEASE_S, 0.1, trainer, str(tmp_path / f"{name}.log")))
        p.start()
        return p

    first = start("first")

    def in_second_epoch_with_steps_in_mlflow():
        run = runs_by_variant(workspace).get(("s1", "lr=0.01", 0))
        if run and run["status"] == "running" and run["mlflow_run_id"]:
            logged = _mlflow_steps(workspace, run["mlflow_run_id"], "loss")
            if logged and STEPS < logged[-1] < STEPS * EPOCHS:
                return run
        assert first.is_alive(), (tmp_path / "first.log").read_text()

    try:
        killed = wait_for(in_second_epoch_with_steps_in_mlflow, 120, "steps of the second epoch in MLflow",
                          interval=0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.join()
    second = start("second")
    second.join(120)
    assert second.exitcode == 0, (tmp_path / "second.log").read_text()

    run = runs_by_variant(workspace)[("s1", "lr=0.01", 0)]
    assert run["status"] == "done" and run["attempts"] == 2 and run["mlflow_run_id"] == killed["mlflow_run_id"]
    # resumed from the first epoch's checkpoint: the steps after it that MLflow had are replayed
    assert [s for e, s in read_log(log_dir, run["hash"]) if e == "start"] == [0, STEPS]
    assert mlflow_runs_of(workspace, run["hash"]) == [(run["mlflow_run_id"], "FINISHED")]
    assert [r["step"] for r in step_rows(workspace, run["hash"])] == list(range(1, STEPS * EPOCHS + 1))
    assert _mlflow_steps(workspace, run["mlflow_run_id"], "loss") == list(range(1, STEPS * EPOCHS + 1))
    assert _mlflow_steps(workspace, run["mlflow_run_id"], "grader") == [STEPS * e for e in range(1, EPOCHS + 1)]

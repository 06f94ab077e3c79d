"""``kill -9`` after a trial's steps reached MLflow past its last checkpoint: the resume replays
those steps (from the checkpoint), and MLflow, which cannot drop a point, must not get them twice.

A worker process (the fake task: a step every 0.1 s, each step logged, a checkpoint at each
epoch's end) is killed in its trial's second epoch once MLflow holds steps of that epoch; a
second worker takes the trial over when the lease expires and resumes it from the first epoch's
checkpoint. Every series of the trial's one MLflow run (the steps' ``loss``, the epochs' objective
``score``) then has one point per step, as the result store has one row per step.

And the other way round: a worker killed before its queued points reached MLflow (a kill -9 leaves
no time to flush, and logging never waits for MLflow) loses them from the run; the resumed attempt
starts after the checkpointed epochs, so it gives the run the epochs the result store kept.
"""
from __future__ import annotations

import os
import signal

from bench.fleet import worker_main
from tests.faults.fault_helpers import (epoch_numbers, mlflow_metric_steps, mlflow_runs_of, prepared, runs_by_variant,
                                        step_numbers, wait_for)
from tests.support.fake_task import read_log
from tests.support.study_files import fake_study

STEPS, EPOCHS = 40, 2
LEASE_S = 1.5


def test_kill_after_steps_reached_mlflow_past_the_checkpoint_logs_each_step_once(tmp_path, forkserver):
    workspace, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "replay.yaml"
    study.write_text(fake_study("replay", [("s1", {"lr": [0.01]})], log_dir=log_dir, epochs=EPOCHS, steps_per_epoch=STEPS,
                                step_s=0.1))
    prepared(study, workspace).store.close()

    def start(name):
        p = forkserver.Process(target=worker_main, name=name, args=(
            str(study), str(workspace), name, LEASE_S, 0.1, str(tmp_path / f"{name}.log")))
        p.start()
        return p

    first = start("first")
    second = None

    def in_second_epoch_with_steps_in_mlflow():
        run = runs_by_variant(workspace).get(("s1", "lr=0.01", 0))
        if run and run.status == "running" and run.tracking_run_id:
            logged = mlflow_metric_steps(workspace, run.tracking_run_id, "loss")
            if logged and STEPS < logged[-1] < STEPS * EPOCHS:
                return run
        assert first.is_alive(), (tmp_path / "first.log").read_text()

    try:
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
    finally:
        if second is not None and second.is_alive():
            second.kill()
            second.join()

    run = runs_by_variant(workspace)[("s1", "lr=0.01", 0)]
    assert run.status == "done" and run.attempts == 2 and run.tracking_run_id == killed.tracking_run_id
    # resumed from the first epoch's checkpoint: the steps after it that MLflow had are replayed
    assert [s for e, s in read_log(log_dir, run.hash) if e == "start"] == [0, STEPS]
    assert mlflow_runs_of(workspace, run.hash) == [(run.tracking_run_id, "FINISHED")]
    assert step_numbers(workspace, run.hash) == list(range(1, STEPS * EPOCHS + 1))
    assert mlflow_metric_steps(workspace, run.tracking_run_id, "loss") == list(range(1, STEPS * EPOCHS + 1))
    assert mlflow_metric_steps(workspace, run.tracking_run_id, "score") == [STEPS * e for e in range(1, EPOCHS + 1)]


def test_epochs_a_kill_kept_from_mlflow_reach_it_when_the_trial_resumes(tmp_path, forkserver):
    """The fake task SIGKILLs its own process at the first step of epoch 3, milliseconds after
    epochs 1 and 2 were checkpointed and stored (MLflow's writer flushes every 2 s); the next
    worker resumes from epoch 2's checkpoint and the run then holds every epoch once."""
    workspace, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "lost.yaml"
    study.write_text(fake_study("lost", [("s1", {"lr": [0.01]})], log_dir=log_dir, epochs=3, steps_per_epoch=3,
                                fault="kill", fault_at_step=7))
    prepared(study, workspace).store.close()

    def work(name):
        p = forkserver.Process(target=worker_main, name=name, args=(
            str(study), str(workspace), name, LEASE_S, 0.1, str(tmp_path / f"{name}.log")))
        p.start()
        p.join(120)
        if p.is_alive():
            p.kill()
            p.join()
        return p.exitcode

    assert work("first") == -signal.SIGKILL
    killed = runs_by_variant(workspace)[("s1", "lr=0.01", 0)]
    assert killed.status == "running" and epoch_numbers(workspace, killed.hash) == [1, 2]  # stored
    # epoch 2's points were queued milliseconds before the kill and lost with it (epoch 1's too,
    # unless the writer's 2 s timer happened to fire in between): MLflow lacks what the store has
    assert 6 not in mlflow_metric_steps(workspace, killed.tracking_run_id, "score")
    (log_dir / "fixed").touch()
    assert work("second") == 0, (tmp_path / "second.log").read_text()

    run = runs_by_variant(workspace)[("s1", "lr=0.01", 0)]
    assert run.status == "done" and run.attempts == 2 and run.tracking_run_id == killed.tracking_run_id
    assert [s for e, s in read_log(log_dir, run.hash) if e == "start"] == [0, 6]  # resumed after epoch 2
    assert mlflow_runs_of(workspace, run.hash) == [(run.tracking_run_id, "FINISHED")]
    assert mlflow_metric_steps(workspace, run.tracking_run_id, "score") == [3, 6, 9]
    assert mlflow_metric_steps(workspace, run.tracking_run_id, "epoch") == [3, 6, 9]

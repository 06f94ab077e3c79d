"""Fault 1: ``kill -9`` of a worker in the middle of a trial loses nothing and repeats nothing.

* Ten seeded random SIGKILLs of workers training the fake task (two at a time, a fresh one
  replacing each victim): surviving workers take the killed trials over once their lease expires and resume
  them from their last checkpoint under the same run hash and MLflow run id; every trial ends
  done exactly once, no checkpointed step runs twice, every step/epoch row is stored once.
* One real tiny training (resnet18 on synthetic 64x128 data) killed through the CLI and
  resumed by rerunning ``ablate run``.
"""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from bench.fleet import worker_main
from tests.faults.fault_helpers import (audit, db_rows, epoch_numbers, mlflow_problems, mlflow_runs_of, mlflow_status,
                                        prepared, run_row, runs_by_variant, step_rows, tiny_study, wait_for)
from tests.support.cli import run_cli, start_cli
from tests.support.fake_task import read_log
from tests.support.study_files import FAKE_TASK, fake_study

SEED = int(os.environ.get("ABLATE_KILL_SEED", "5"))  # other seeds: ABLATE_KILL_SEED=N
KILLS = 10
LEASE_S = 1.5  # short, so a survivor takes a killed trial over quickly (the CLI minimum is 5 s)


def _holding(workspace: Path, worker_id: str):
    rows = db_rows(workspace, "SELECT hash, step, epochs_done FROM runs WHERE status = 'running' AND worker = ?",
                   (worker_id,))
    return rows[0] if rows else None


def test_random_kills_lose_nothing_and_repeat_nothing(tmp_path, forkserver):
    from ablations.plan import identity_hash
    from ablations.task import load_task

    rng = random.Random(SEED)
    workspace, log_dir = tmp_path / "ws", tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "kills.yaml"
    study.write_text(fake_study("kills", [
        ("first", {"lr": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006], "momentum": [0.9, 0.8]}),
        ("second", {"weight_decay": [1e-5, 2e-5, 3e-5, 4e-5, 5e-5, 6e-5], "weight": [0.5, 0.4]})],
        log_dir=log_dir, epochs=3, steps_per_epoch=4, step_s=0.06))
    prepared(study, workspace).store.close()

    counter = iter(range(1000))
    everyone = []  # every worker started, so that a failed test leaves none behind

    def start():
        worker_id = f"kill-w{next(counter)}"
        p = forkserver.Process(target=worker_main, name=worker_id, args=(
            str(study), str(workspace), worker_id, LEASE_S, 0.1, str(tmp_path / f"{worker_id}.log")))
        p.start()
        everyone.append(p)
        return p

    try:
        workers = [start(), start()]
        kills = []  # (victim, run hash, step of the run at the kill), kills inside a trial only
        idle_kills = 0
        while len(kills) < KILLS:
            time.sleep(rng.uniform(0.1, 0.6))
            deadline = time.monotonic() + 20
            victim = None
            while victim is None and time.monotonic() < deadline:  # kill only workers inside a trial
                busy = [(p, h) for p in workers if p.is_alive() and (h := _holding(workspace, p.name))]
                if busy:
                    victim = rng.choice(busy)[0]
                else:
                    assert any(p.is_alive() for p in workers), "the study finished before ten kills"
                    time.sleep(0.05)
            assert victim is not None, "no worker was inside a trial for 20 s"
            time.sleep(rng.uniform(0.0, 1.2))  # a random point of its trial: setup, steps, checkpoint, end
            os.kill(victim.pid, signal.SIGKILL)
            victim.join()
            assert victim.exitcode == -signal.SIGKILL
            held = _holding(workspace, victim.name)  # read after the kill: what it really held
            if held is None:
                idle_kills += 1  # it was between two trials: no trial to resume
            else:
                kills.append((victim.name, held["hash"], held["step"]))
            workers = [p for p in workers if p is not victim] + [start()]

        for p in workers:  # the survivors finish the study, taking the killed trials over
            p.join(240)
        assert [p.exitcode for p in workers] == [0] * len(workers), \
            "".join(f.read_text() for f in tmp_path.glob("kill-w*.log"))
    finally:
        for p in everyone:
            if p.is_alive():
                p.kill()
                p.join()

    report = audit(workspace, log_dir)
    killed = {h for _, h, _ in kills}
    resumed_from_ckpt = sum(1 for h in killed for e, s in read_log(log_dir, h)[1:] if e == "start" and s > 0)
    in_training = sum(report["calls"][h] - 1 for h in killed)  # kills after the task's fit had started
    print(f"\nkills={len(kills)} (inside fit: {in_training}, while setting the trial up: "
          f"{len(kills) - in_training}) kills between trials={idle_kills} distinct killed trials={len(killed)} resumes from a checkpoint="
          f"{resumed_from_ckpt} fit calls={sum(report['calls'].values())} for {len(report['runs'])} runs; "
          f"trained to the end twice={len(report['finished_twice'])} checkpointed steps replayed="
          f"{len(report['replayed_after_ckpt'])}")

    assert report["by_status"] == {"done": len(report["runs"])}, report["by_status"]
    assert report["cells"] == 24 and len(report["runs"]) == 24
    assert report["finished_twice"] == []           # no trial trained to the end twice
    assert report["replayed_after_ckpt"] == []      # no checkpointed step ran again
    assert report["history_gaps"] == []             # every step and epoch row stored exactly once
    assert mlflow_problems(report) == []            # one MLflow run per trial, FINISHED, same id
    for h in killed:
        row = report["runs"][h]
        assert row["attempts"] >= 2, (h, row)  # claimed again after the kill
        last_ckpt = last_step = 0
        for event, step in read_log(log_dir, h):  # each attempt starts at the last checkpoint
            if event == "start":                  # (never before it, never past trained steps)
                assert last_ckpt <= step <= last_step, (h, read_log(log_dir, h))
            elif event == "ckpt":
                last_ckpt = step
            elif event == "step":
                last_step = step
    task = load_task(FAKE_TASK)
    for h, row in report["runs"].items():  # identity: the run's key is still its config's hash
        config = db_rows(workspace, "SELECT config_json FROM runs WHERE hash = ?", (h,))[0]["config_json"]
        assert identity_hash(task, task.Config.model_validate_json(config)) == h
        if h not in killed:
            assert report["calls"][h] == 1 and row["attempts"] == 1
    assert resumed_from_ckpt >= 1


def test_kill_real_training_and_rerun_resumes_same_identity(tmp_path):
    """kill -9 of ``ablate run`` during a real training; the rerun resumes from the checkpoint."""
    study = tmp_path / "real.yaml"
    study.write_text(tiny_study("realkill", "  - name: s1\n    grid: {lr: [0.01, 0.02]}\n", epochs=3))
    ws = tmp_path / "ws"
    proc = start_cli("run", study, "--workspace", ws, "--no-progress", "--lease", "5", cwd=tmp_path,
                     log=tmp_path / "first.log")
    try:
        def second_has_checkpoint():  # trial 1 done, trial 2 running past its first epoch's checkpoint
            runs = runs_by_variant(ws)
            first, second = runs.get(("s1", "lr=0.01", 0)), runs.get(("s1", "lr=0.02", 0))
            if first and second and first.status == "done" and second.status == "running" \
                    and (ws / "runs" / second.hash / "checkpoint.pt").exists() and step_rows(ws, second.hash):
                return second
        running = wait_for(second_has_checkpoint, 240, "the second trial's first checkpoint", interval=0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = runs_by_variant(ws)
    first_before, killed = before[("s1", "lr=0.01", 0)], before[("s1", "lr=0.02", 0)]
    first_row = run_row(ws, first_before.hash)
    assert killed.status == "running" and killed.tracking_run_id == running.tracking_run_id
    assert mlflow_status(ws, killed.tracking_run_id) == "RUNNING"  # until it is resumed
    rows_before = step_rows(ws, killed.hash)

    rerun = run_cli("run", study, "--workspace", ws, "--no-progress", "--lease", "5", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = runs_by_variant(ws)
    first_after, resumed = after[("s1", "lr=0.01", 0)], after[("s1", "lr=0.02", 0)]
    # the finished trial keeps its result untouched: status, attempts, finished_at, every final
    # metric (the objective included), its tracking run id
    assert first_after == first_before and run_row(ws, first_before.hash) == first_row
    # the killed one resumed under the same identity and ended FINISHED in MLflow
    assert resumed.hash == killed.hash and resumed.status == "done" and resumed.attempts == 2
    assert resumed.tracking_run_id == killed.tracking_run_id
    assert mlflow_runs_of(ws, killed.hash) == [(killed.tracking_run_id, "FINISHED")]
    # from its checkpoint: the steps stored before the kill were not trained again
    rows_after = step_rows(ws, killed.hash)
    assert [r.step for r in rows_after] == list(range(1, 3 * 2 + 1))
    assert epoch_numbers(ws, killed.hash) == [1, 2, 3]
    assert rows_before and rows_after[:len(rows_before)] == rows_before


def test_worker_cleans_up_after_an_attempt_killed_at_awkward_moments(tmp_path):
    """Killed while writing a checkpoint (a half-written temporary is left) and after creating
    its MLflow run but before storing the run's id: the next attempt removes the temporary,
    resumes from the complete checkpoint and adopts that MLflow run, which ends FINISHED."""
    from mlflow.tracking import MlflowClient

    from runner.orchestrate.context import Position, write_checkpoint
    from runner.orchestrate.walk import materialize, studies_in_scope
    from runner.orchestrate.worker import StopFlag, WorkerOptions, run_worker

    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "awkward.yaml"
    study.write_text(fake_study("awkward", [("s1", {"lr": [0.01]})], log_dir=log_dir, epochs=2, steps_per_epoch=2,
                                step_s=0.001))
    session = prepared(study, tmp_path / "ws")
    (state,) = materialize(session, studies_in_scope(session, None))
    run_hash = state.results[0].run_hashes[0]
    # attempt 1: claimed, MLflow run created, checkpoint of epoch 1 written, then killed while
    # writing the next checkpoint and before its MLflow run id reached the store
    assert session.store.claim_run(run_hash, "killed-worker", lease_s=0.01) is not None
    client = MlflowClient(session.tracking_uri)
    experiment = client.get_experiment_by_name(session.experiment).experiment_id
    orphan = client.create_run(experiment, tags={"config_hash": run_hash}).info.run_id
    run_dir = session.run_dir(run_hash)
    write_checkpoint(run_dir, Position(1, 2, 0.5), {"epoch": 1, "step_in_epoch": 0, "step": 2})
    (run_dir / ".checkpoint.pt.4242.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    time.sleep(0.05)  # its lease expires

    summary = run_worker(session, WorkerOptions(worker_id="w", lease_s=30, poll_s=0.1), StopFlag())
    run = session.store.run(run_hash)
    assert summary.trained == 1 and run.status == "done" and run.attempts == 2
    assert sorted(p.name for p in run_dir.iterdir() if "checkpoint" in p.name) == ["checkpoint.pt"]
    assert read_log(log_dir, run_hash)[0] == ("start", 2)  # resumed from the complete checkpoint (step 2)
    assert [s for e, s in read_log(log_dir, run_hash) if e == "step"] == [3, 4]
    assert run.tracking_run_id == orphan
    assert mlflow_runs_of(tmp_path / "ws", run_hash) == [(orphan, "FINISHED")]

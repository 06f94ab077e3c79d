"""Fault 3: many worker processes on one SQLite workspace.

8 worker processes (the CI figure; ``bench/concurrency.py`` runs 16, 32, 64) pull 200 trials of
the fake task in a two-study chain from one SQLite result store and one SQLite MLflow store: no "database is
locked" failure anywhere (stored errors, worker logs, exit codes), no trial left running, every
trial trained exactly once, one FINISHED MLflow run per trial.

Also: several ``ablate run`` commands started together on a new workspace (two terminals, a job
array): they take turns creating the MLflow store, then share the trials.
"""
from __future__ import annotations

import sqlite3

from tests.faults.fault_helpers import db_rows, mlflow_problems, run_fleet, tiny_study
from tests.support.cli import start_cli

WORKERS = 8
TRIALS = 200


def test_fleet_of_workers_on_sqlite_runs_every_trial_exactly_once(tmp_path, forkserver):
    report = run_fleet(tmp_path, workers=WORKERS, trials=TRIALS, start_method="forkserver", lease_s=60)
    print(f"\n{WORKERS} workers, {report['cells']} trials: {report['wall_s']:.1f}s, "
          f"{report['trials_per_s']:.2f} trials/s, statuses {report['by_status']}, "
          f"locked errors {len(report['locked']) + report['locked_in_logs']}, exit codes {report['exit_codes']}")
    assert report["cells"] == TRIALS and len(report["runs"]) == TRIALS
    assert report["hung"] == [] and report["exit_codes"] == [0] * WORKERS, report["worker_log"][-4000:]
    assert report["locked"] == [] and report["locked_in_logs"] == 0, report["worker_log"][-4000:]
    assert report["by_status"] == {"done": TRIALS}          # nothing failed, nothing left running
    assert all(calls == 1 for calls in report["calls"].values()), \
        {h: c for h, c in report["calls"].items() if c != 1}  # the task's fit ran once per trial
    assert report["finished_twice"] == [] and report["history_gaps"] == []
    assert mlflow_problems(report) == []


def test_simultaneous_ablate_runs_on_a_new_workspace_share_the_trials(tmp_path):
    """Three ``ablate run`` at once on an empty workspace. Before the workspace lock, two of the
    three died in MLflow's schema migration (alembic "expected to match one row")."""
    study = tmp_path / "together.yaml"
    study.write_text(tiny_study("together", "  - name: s1\n    grid: {lr: [0.01, 0.02, 0.03, 0.04]}\n",
                                epochs=1, steps_per_epoch=2))
    ws = tmp_path / "ws"
    logs = [tmp_path / f"run{i}.log" for i in range(3)]
    procs = [start_cli("run", study, "--workspace", ws, "--no-progress", cwd=tmp_path, log=log) for log in logs]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0, 0, 0], output
    assert "Traceback" not in output, output
    runs = db_rows(ws, "SELECT status, attempts FROM runs")
    assert [(r["status"], r["attempts"]) for r in runs] == [("done", 1)] * 4  # each trained once
    with sqlite3.connect(ws / "mlflow.db") as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)] * 4

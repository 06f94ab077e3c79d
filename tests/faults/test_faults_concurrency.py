"""Fault 3: many worker processes on one SQLite workspace.

8 worker processes (the CI figure; ``bench/concurrency.py`` runs 16, 32, 64) pull 200 fake trials
of a two-study chain from one SQLite result store and one SQLite MLflow store: no "database is
locked" failure anywhere (stored errors, worker logs, exit codes), no trial left running, every
trial trained exactly once, one FINISHED MLflow run per trial.
"""
from __future__ import annotations

from fault_fakes import mlflow_problems, run_fleet

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
        {h: c for h, c in report["calls"].items() if c != 1}  # the trainer ran once per trial
    assert report["finished_twice"] == [] and report["history_gaps"] == []
    assert mlflow_problems(report) == []

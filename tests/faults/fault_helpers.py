"""Helpers of the fault tests: study files (the real ``mtl`` task, tiny, or the shared fake task),
worker processes to kill, read-outs of the result store and of MLflow's database, an audit of a
workspace after the faults, a fleet of workers on one SQLite workspace, and writers to kill in
the middle of a write.

The CLI is run through :mod:`tests.support.cli`; the fake task is :mod:`tests.support.fake_task`
(its faults, per-run log and gates are documented there), its study files come from
:mod:`tests.support.study_files`.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.fleet import run_workers, worker_main
from tests.support.fake_task import read_log
from tests.support.study_files import FAKE_TASK, fake_study

# Modules a worker process needs, imported once in the fork server: every process it forks starts
# in milliseconds instead of importing torch, mlflow and optuna again (seconds each on 2 busy cores).
PRELOAD = ["torch", "optuna", "mlflow.tracking", "runner.orchestrate.scheduler", "runner.orchestrate.worker",
           "runner.orchestrate.trial", "runner.orchestrate.search", "runner.tracking.mlflow_tracker",
           FAKE_TASK, "bench.fleet", "tests.faults.fault_helpers"]


# -- study files ------------------------------------------------------------------------------------

def tiny_study(name: str, studies: str, **defaults) -> str:
    """A real ``mtl`` study file (resnet18, synthetic 64x128): a few seconds of CPU training per trial."""
    base = {"data_root": "synthetic", "synthetic_train": 8, "synthetic_val": 4, "synthetic_size": "[64, 128]",
            "crop_size": "[64, 128]", "encoder": "resnet18", "encoder_weights": "none", "head": "plain",
            "decoder": "none", "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "val_batch_size": 4,
            "device": "cpu"}
    base.update(defaults)
    lines = [f"name: {name}", "defaults:"] + [f"  {k}: {v}" for k, v in base.items()]
    return "\n".join(lines) + "\nstudies:\n" + studies


def prepared(study: Path, workspace: Path):
    """The session of ``study`` with the workspace prepared as ``ablate run`` prepares it before it
    starts worker processes (the tracker's store and experiment, Optuna's tables)."""
    from runner.orchestrate.scheduler import prepare_workspace
    from runner.orchestrate.session import Session

    session = Session.open(study, workspace=workspace)
    prepare_workspace(session)
    return session


# -- worker processes -------------------------------------------------------------------------------

def worker_blocked_in_ask(study_file: str, workspace: str, worker_id: str, lease_s: float, poll_s: float,
                          marker: str) -> None:
    """:func:`worker_main`, except that its first Optuna trial blocks inside ``ask``, after the
    trial's row is in Optuna's storage: it creates ``marker`` and waits for a kill."""
    import threading

    import optuna

    real_init = optuna.trial.Trial.__init__

    def init_then_block(self, study, trial_id):
        real_init(self, study, trial_id)
        Path(marker).touch()
        threading.Event().wait()

    optuna.trial.Trial.__init__ = init_then_block
    worker_main(study_file, workspace, worker_id, lease_s, poll_s)


# -- reading the result store -----------------------------------------------------------------------

@contextmanager
def result_store(workspace: Path) -> Iterator:
    """The workspace's result store, read-only (creates nothing), closed afterwards."""
    from runner.store import ResultStore, sqlite_url

    store = ResultStore(sqlite_url(Path(workspace) / "ablate.db"), read_only=True)
    try:
        yield store
    finally:
        store.close()


def db_rows(workspace: Path, sql: str, args=()) -> list[dict]:
    """Plain SQL on the result database's tables (for conditions the store's API has no reader for)."""
    db = sqlite3.connect(Path(workspace) / "ablate.db", timeout=60)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def runs_by_variant(workspace: Path) -> dict:
    """``{(study, variant, seed): RunRecord}`` of every cell that points at a run."""
    cells = db_rows(workspace, "SELECT s.name AS study, t.variant, t.seed, t.run_hash FROM trials t "
                               "JOIN studies s ON s.id = t.study_id WHERE t.run_hash IS NOT NULL")
    with result_store(workspace) as store:
        runs = store.runs([c["run_hash"] for c in cells])
    return {(c["study"], c["variant"], c["seed"]): runs[c["run_hash"]] for c in cells}


def run_row(workspace: Path, run_hash: str) -> dict:
    """The run's whole stored row (timestamps, checkpoint path ...) with its final metrics: what
    "untouched" compares."""
    (row,) = db_rows(workspace, "SELECT * FROM runs WHERE hash = ?", (run_hash,))
    row["metrics"] = {r["name"]: r["value"] for r in db_rows(
        workspace, "SELECT name, value FROM run_metrics WHERE run_hash = ?", (run_hash,))}
    return row


def step_rows(workspace: Path, run_hash: str) -> list:
    """The run's StepRecords (step, wall time, every scalar), ordered by step."""
    with result_store(workspace) as store:
        return store.steps(run_hash)


def step_numbers(workspace: Path, run_hash: str) -> list[int]:
    return [r.step for r in step_rows(workspace, run_hash)]


def epoch_numbers(workspace: Path, run_hash: str) -> list[int]:
    with result_store(workspace) as store:
        return [e.epoch for e in store.epochs([run_hash])]


# -- reading MLflow's database ----------------------------------------------------------------------

def _mlflow(workspace: Path, sql: str, args=()) -> list[tuple]:
    db = sqlite3.connect(Path(workspace) / "mlflow.db", timeout=60)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def mlflow_status(workspace: Path, run_id: str) -> str:
    rows = _mlflow(workspace, "SELECT status FROM runs WHERE run_uuid = ?", (run_id,))
    return rows[0][0] if rows else "missing"


def mlflow_runs_of(workspace: Path, run_hash: str) -> list[tuple[str, str]]:
    """(run id, status) of every MLflow run tagged with the trial's hash."""
    return _mlflow(workspace, "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                              "WHERE t.key = 'config_hash' AND t.value = ?", (run_hash,))


def mlflow_metric_steps(workspace: Path, run_id: str, key: str) -> list[int]:
    """Every step of ``key`` in MLflow's metrics table, duplicates included, in order."""
    return [s for (s,) in _mlflow(workspace, "SELECT step FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step",
                                  (run_id, key))]


def mlflow_tags(workspace: Path, run_id: str) -> dict:
    return dict(_mlflow(workspace, "SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))


# -- waiting and messages ---------------------------------------------------------------------------

def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true; a database not created yet (or busy)
    counts as not yet."""
    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (sqlite3.OperationalError, OperationalError):  # table not created yet / busy
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ablate_messages(err: str) -> list[str]:
    """ablate's own lines on stderr (``ablate: ...``); MLflow may log its store creation there too."""
    return [line for line in err.splitlines() if line.startswith("ablate: ")]


# -- auditing a workspace after the faults ----------------------------------------------------------

def audit(workspace: Path, log_dir: Path) -> dict:
    """What the stores hold after a run of the fake task, and what it logged, in numbers.

    ``by_status``: runs per status; ``cells``: trial cells; ``finished_twice``: runs trained to the
    end by more than one attempt; ``calls``: fit calls per run; ``replayed_after_ckpt``: steps run
    again although a checkpoint past them was in place (a resume that did not start from the last
    checkpoint); ``history_gaps``: done runs whose stored step/epoch rows are not exactly 1..N, each
    once; ``mlflow``: per run, the MLflow runs tagged with its hash and their statuses; ``locked``:
    runs whose stored error mentions a locked database."""
    workspace, log_dir = Path(workspace), Path(log_dir)
    runs = {r["hash"]: r for r in db_rows(workspace, "SELECT hash, status, tracking_run_id, attempts, error, step, "
                                                     "epochs_done, config_json FROM runs")}
    cells = db_rows(workspace, "SELECT COUNT(*) AS n FROM trials")[0]["n"]
    steps: dict = {}
    for r in db_rows(workspace, "SELECT run_hash, step FROM step_metrics WHERE name = 'loss' ORDER BY step"):
        steps.setdefault(r["run_hash"], []).append(r["step"])
    epochs: dict = {}
    for r in db_rows(workspace, "SELECT run_hash, epoch FROM epoch_metrics WHERE name = 'score' ORDER BY epoch"):
        epochs.setdefault(r["run_hash"], []).append(r["epoch"])

    by_status: dict = {}
    for r in runs.values():
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    finished_twice, calls, replayed, gaps = [], {}, [], []
    for h, r in runs.items():
        events = read_log(log_dir, h)
        calls[h] = sum(1 for e, _ in events if e == "start")
        # attempts that trained steps and returned: more than one means the trial was trained to
        # the end twice (an attempt that starts at the final checkpoint and only re-reports the
        # result, after a kill between the end of training and the store's "done", is no repeat)
        trained_to_end, stepped = 0, False
        for event, _ in events:
            if event == "start":
                stepped = False
            elif event == "step":
                stepped = True
            elif event == "done" and stepped:
                trained_to_end += 1
        if trained_to_end > 1:
            finished_twice.append(h)
        last_ckpt, seen = 0, set()
        for event, step in events:
            if event == "ckpt":
                last_ckpt = max(last_ckpt, step)
            elif event == "step":
                if step in seen and step <= last_ckpt:
                    replayed.append((h, step))
                seen.add(step)
        if r["status"] == "done":
            config = json.loads(r["config_json"])
            n_steps = config["epochs"] * config["steps_per_epoch"]
            if steps.get(h) != list(range(1, n_steps + 1)) or epochs.get(h) != list(range(1, config["epochs"] + 1)):
                gaps.append(h)

    mlflow: dict = {}
    if (workspace / "mlflow.db").exists():
        for run_uuid, status, value in _mlflow(
                workspace, "SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                           "WHERE t.key = 'config_hash'"):
            mlflow.setdefault(value, []).append((run_uuid, status))
    return {"by_status": by_status, "runs": runs, "cells": cells, "finished_twice": finished_twice,
            "calls": calls, "replayed_after_ckpt": replayed, "history_gaps": gaps, "mlflow": mlflow,
            "locked": [h for h, r in runs.items() if r["error"] and "locked" in r["error"].lower()]}


def mlflow_problems(report: dict) -> list[str]:
    """Done runs whose MLflow identity is not one FINISHED run with the id the result store recorded."""
    problems = []
    for h, r in report["runs"].items():
        found = report["mlflow"].get(h, [])
        if r["status"] != "done":
            continue
        if len(found) != 1:
            problems.append(f"{h}: {len(found)} MLflow runs {found}")
        elif found[0][0] != r["tracking_run_id"] or found[0][1] != "FINISHED":
            problems.append(f"{h}: MLflow {found[0]} but store says {r['tracking_run_id']}")
    return problems


# -- a fleet of worker processes on one SQLite workspace ---------------------------------------------

def fleet_study(trials: int) -> list:
    """Two chained studies of about ``trials`` cells in all (distinct configs: no shared runs)."""
    half = max(trials // 2, 2)
    n1 = max(half // 10, 1)
    n2 = max((trials - n1 * 10) // 10, 1)
    return [("first", {"lr": [round(0.001 * (i + 1), 6) for i in range(n1)],
                       "momentum": [round(0.5 + 0.05 * j, 4) for j in range(10)]}),
            ("second", {"lr": [round(0.0005 + 0.001 * i, 6) for i in range(n2)],
                        "weight_decay": [round(1e-5 * (j + 1), 8) for j in range(10)]})]


def run_fleet(workdir: Path, *, workers: int, trials: int, step_s: float = 0.002, epochs: int = 1,
              steps: int = 2, lease_s: float = 60.0, poll_s: float = 0.2, start_method: str = "spawn",
              timeout_s: float = 600.0) -> dict:
    """Start ``workers`` processes on a fresh workspace over ~``trials`` fake trials; wait (killing
    whatever still runs after ``timeout_s``); audit."""
    workdir = Path(workdir)
    workspace, log_dir = workdir / "ws", workdir / "calls"
    log_dir.mkdir(parents=True, exist_ok=True)
    study = workdir / "fleet.yaml"
    study.write_text(fake_study("fleet", fleet_study(trials), log_dir=log_dir, epochs=epochs, steps_per_epoch=steps,
                                step_s=step_s))
    prepared(study, workspace).store.close()
    fleet = run_workers(study, workspace, workdir, workers=workers, lease_s=lease_s, poll_s=poll_s,
                        start_method=start_method, timeout_s=timeout_s)
    report = audit(workspace, log_dir)
    report.update(workers=workers, wall_s=fleet.wall_s, exit_codes=fleet.exit_codes, hung=fleet.hung,
                  locked_in_logs=fleet.log.lower().count("locked"), worker_log=fleet.log,
                  trials_per_s=report["by_status"].get("done", 0) / fleet.wall_s)
    return report


# -- writers to kill in the middle of a write ------------------------------------------------------

def checkpoint_writer(run_dir: str, n_floats: int) -> None:
    """Write the run directory's checkpoint as the trial context does (runner.orchestrate.context)
    in a loop until killed; each holds a counter (its position's epoch and step), a tensor filled
    with it, and the tensor's sum (to verify a loaded file is whole)."""
    import torch

    from runner.orchestrate.context import Position, write_checkpoint

    i = 0
    while True:
        i += 1
        blob = torch.full((n_floats,), float(i))
        write_checkpoint(Path(run_dir), Position(i, i, float(i)), {"blob": blob, "sum": float(blob.sum())})


def atomic_writer(path: str, n_bytes: int) -> None:
    """Rewrite ``path`` with runner.atomic in a loop until killed; each version is one repeated
    letter, so a torn file would mix letters or be short."""
    from runner.atomic import write_bytes_atomic

    i = 0
    while True:
        write_bytes_atomic(path, bytes([ord("a") + i % 26]) * n_bytes)
        i += 1

"""A fast fake trainer and worker-process entry points for the fault tests and bench/concurrency.py.

``FakeTrainer`` plays the real training loop's part towards the worker (runner.tasks.mtl.train.train): it
resumes from ``<run_dir>/checkpoint.pt``, delivers per-step losses through ``hooks.on_steps``,
calls ``on_epoch`` before the epoch's checkpoint, ``before_checkpoint`` before writing it
(atomically, with runner.tasks.mtl.train.save_checkpoint), polls ``should_stop`` every step and raises
TrialInterrupted after checkpointing. It trains no model: a step is a short sleep.

Every call appends lines to ``<log_dir>/<run hash>.log`` with O_APPEND (one ``write`` per line,
so lines of concurrent or killed processes never interleave):

    start <epoch> <global_step>     the trainer was called; resumes at this position
    step <global_step>              a step ran
    ckpt <global_step>              the checkpoint at this step is in place
    done <global_step>              the trainer returned a result

so a test can prove that a trial finished exactly once and that a resume repeated no step that
had been checkpointed.

Faults are chosen per trial by its learning rate (``faults={lr: kind}``): nan, oom, error, data
raise from the first step on; the others act on the process or its disk for real:

    kill      the worker SIGKILLs itself at its first step (an OOM killer), on every attempt
    escape    raises :class:`Escape`, which no handler of the worker catches, on every attempt
    fill      once, at the first step of epoch 2, fills the workspace's file system to the last
              byte (``<workspace>/filler``): the writes after it fail with ENOSPC
    stall     attempt 1 waits in the middle of its epoch-1 checkpoint write (the temporary file
              open, half written) until ``<log_dir>/gate-1`` exists, attempt 2 after its first
              step until ``gate-2`` exists; each creates ``gate-<n>.waiting`` first. A test
              SIGSTOPs them there, past their lease, and lets them go on with SIGCONT.

Once ``<log_dir>/fixed`` exists, no fault is raised (the user "fixed" the cause).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

FAULT_MESSAGES = {
    "nan": "non-finite loss at step 2 (loss=nan, semseg=nan, depth=nan); lower the learning rate",
    "oom": "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)",
    "error": "fake trainer exploded on purpose",
}


class Escape(BaseException):
    """An error no handler of the worker expects (as some libraries' BaseException subclasses)."""


def wait_at_gate(gate: Path) -> None:
    """Create ``<gate>.waiting``, then wait until ``gate`` exists."""
    Path(f"{gate}.waiting").touch()
    while not gate.exists():
        time.sleep(0.01)


class _GateWhenPickled:
    """Put into a checkpoint: pickling it (inside torch.save, the temporary file open and half
    written) waits at ``gate``."""

    def __init__(self, gate: Path):
        self.gate = gate

    def __reduce__(self):
        wait_at_gate(self.gate)
        return (dict, ())


def fill_disk(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (ENOSPC), ever smaller chunks."""
    import errno

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def log_line(log_dir: Path, run_hash: str, text: str) -> None:
    fd = os.open(Path(log_dir) / f"{run_hash}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def read_log(log_dir: Path, run_hash: str) -> list[tuple[str, int]]:
    path = Path(log_dir) / f"{run_hash}.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        out.append((parts[0], int(parts[-1])))
    return out


@dataclass
class FakeTrainer:
    log_dir: str
    step_s: float = 0.005                       # "training" time per step
    faults: dict = field(default_factory=dict)  # {lr: "nan" | "oom" | "error" | "data"}

    def __call__(self, config, run_dir, hooks):
        import torch

        from runner.tasks.mtl.train import CHECKPOINT_NAME, NonFiniteLossError, TrainResult, TrialInterrupted, save_checkpoint

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        run_hash = run_dir.name
        ckpt = run_dir / CHECKPOINT_NAME
        epochs, steps = config.epochs, config.steps_per_epoch or 4
        epoch, step_in_epoch, global_step, history = 0, 0, 0, []
        if ckpt.exists():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
            global_step, history = state["global_step"], state["history"]
        log_line(self.log_dir, run_hash, f"start {epoch} {global_step}")
        attempt = sum(1 for event, _ in read_log(self.log_dir, run_hash) if event == "start")
        started = time.perf_counter()
        fault = None if (Path(self.log_dir) / "fixed").exists() else self.faults.get(config.lr)
        first_step = global_step + 1

        def checkpoint():
            hooks.before_checkpoint()
            state = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                     "history": history, "fake": True}
            if fault == "stall" and attempt == 1:
                state["gate"] = _GateWhenPickled(Path(self.log_dir) / "gate-1")
            save_checkpoint(ckpt, state)
            log_line(self.log_dir, run_hash, f"ckpt {global_step}")
            hooks.on_checkpoint(ckpt, epoch, global_step)

        # a deterministic score per config, so winners (and the chain) are reproducible
        score = 10.0 + 1000.0 * config.lr + config.momentum + 0.1 * config.seed
        while epoch < epochs:
            while step_in_epoch < steps:
                if hooks.should_stop():
                    checkpoint()
                    raise TrialInterrupted(f"interrupted at epoch {epoch}, step {global_step}")
                if fault == "kill":
                    import signal

                    os.kill(os.getpid(), signal.SIGKILL)
                if fault == "escape":
                    raise Escape("the worker met an error nothing expects")
                if fault == "fill" and epoch == 1 and not (run_dir.parents[1] / "filler").exists():
                    fill_disk(run_dir.parents[1] / "filler")
                if fault == "stall" and attempt == 2 and global_step == first_step:
                    wait_at_gate(Path(self.log_dir) / "gate-2")
                if fault in ("nan", "oom", "error", "data") and global_step >= 1:
                    if fault == "nan":
                        raise NonFiniteLossError(FAULT_MESSAGES["nan"])
                    if fault == "oom":
                        raise RuntimeError(FAULT_MESSAGES["oom"])
                    if fault == "data":
                        from runner.tasks.mtl.data.errors import DataError

                        raise DataError(f"{self.log_dir}/val/semseg/3.png: cannot decode (image file is "
                                        f"truncated); expected an 8-bit ('L' or 'P') PNG")
                    raise ValueError(FAULT_MESSAGES["error"])
                time.sleep(self.step_s)
                step_in_epoch += 1
                global_step += 1
                log_line(self.log_dir, run_hash, f"step {global_step}")
                loss = 1.0 / global_step
                hooks.on_steps([{"step": global_step, "wall_time_s": time.perf_counter() - started,
                                 "loss": loss, "loss_semseg": loss / 2, "loss_depth": loss / 2}])
            epoch += 1
            step_in_epoch = 0
            row = {"epoch": epoch, "step": global_step, "wall_time_s": time.perf_counter() - started,
                   "lr": config.lr, "loss": 1.0 / global_step, "loss_semseg": 0.5 / global_step,
                   "loss_depth": 0.5 / global_step, "iou": 50.0 + score, "si_logrmse": 20.0,
                   "grader": score + epoch, "iou_per_class": [50.0 + score] * 19}
            history.append(row)
            hooks.on_epoch(row)
            checkpoint()
            hooks.on_progress(epoch, global_step)
        log_line(self.log_dir, run_hash, f"done {global_step}")
        return TrainResult(final=history[-1], best=max(history, key=lambda r: r["grader"]), params=1234,
                           wall_time_s=time.perf_counter() - started, device="cpu", epochs=epoch,
                           steps=global_step, history=history)


def worker_main(study_file: str, workspace: str, worker_id: str, lease_s: float, poll_s: float,
                trainer: FakeTrainer, log_file: Optional[str] = None, input_errors=None) -> None:
    """A worker process exactly as ``ablate run --workers N`` starts one (runner.orchestrate.scheduler's
    entry point), with the fake trainer and warnings captured in ``log_file``.

    Exit codes: 0 the chain is done, 3 interrupted, 2 bad input; an unexpected exception exits 1
    with its traceback in ``log_file``."""
    if log_file:  # capture warnings (e.g. a retried or dropped MLflow write) for the test to read
        logging.basicConfig(filename=log_file, level=logging.WARNING,
                            format=f"%(asctime)s {worker_id} %(name)s %(levelname)s %(message)s")
    from runner.orchestrate.scheduler import _worker_process
    from runner.orchestrate.worker import WorkerOptions

    options = WorkerOptions(worker_id=worker_id, lease_s=lease_s, poll_s=poll_s, trainer=trainer)
    try:
        _worker_process(study_file, None, workspace, None, None, None, options, input_errors)
    except SystemExit:
        raise
    except BaseException:
        logging.getLogger("fault_fakes").exception("worker %s crashed", worker_id)
        raise


def worker_blocked_in_ask(study_file: str, workspace: str, worker_id: str, lease_s: float, poll_s: float,
                          trainer: FakeTrainer, marker: str) -> None:
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
    worker_main(study_file, workspace, worker_id, lease_s, poll_s, trainer)


def study_text(name: str, studies: list[tuple[str, dict]], *, epochs: int = 2, steps: int = 3,
               seeds: int = 1) -> str:
    """A study file for the fake trainer: [(study, {key: values})], each study a grid starting from
    the previous one's winner."""
    lines = [f"name: {name}", "defaults:", "  device: cpu", "  encoder: resnet18",
             "  crop_size: [64, 128]", f"  epochs: {epochs}", f"  steps_per_epoch: {steps}",
             "  batch_size: 2", "studies:"]
    for i, (study, grid) in enumerate(studies):
        lines.append(f"  - name: {study}")
        if i:
            lines.append("    start_from: previous")
        if seeds > 1:
            lines.append(f"    seeds: {seeds}")
        lines.append("    grid: {" + ", ".join(f"{k}: {list(v)}" for k, v in grid.items()) + "}")
    return "\n".join(lines) + "\n"


def fleet_study(trials: int) -> list[tuple[str, dict]]:
    """Two chained studies of about ``trials`` cells in all (distinct configs: no shared runs)."""
    half = max(trials // 2, 2)
    n1 = max(half // 10, 1)
    n2 = max((trials - n1 * 10) // 10, 1)
    return [("first", {"lr": [round(0.001 * (i + 1), 6) for i in range(n1)],
                       "momentum": [round(0.5 + 0.05 * j, 4) for j in range(10)]}),
            ("second", {"lr": [round(0.0005 + 0.001 * i, 6) for i in range(n2)],
                        "weight_decay": [round(1e-5 * (j + 1), 8) for j in range(10)]})]


# -- auditing a workspace after the faults ----------------------------------------------------------

def audit(workspace: Path, log_dir: Path) -> dict:
    """What the stores hold after a run, and what the fake trainer logged, in numbers.

    ``by_status``: runs per status; ``cells``: trial cells; ``finished_twice``: runs trained to the end by
    more than one attempt; ``calls``: trainer calls per run; ``replayed_after_ckpt``: steps run
    again although a checkpoint past them was in place (a resume that did not start from the last
    checkpoint); ``history_gaps``: done runs whose stored step/epoch rows are not exactly 1..N;
    ``mlflow``: per run, the MLflow runs tagged with its hash and their statuses; ``locked``:
    runs whose stored error mentions a locked database."""
    import sqlite3

    workspace, log_dir = Path(workspace), Path(log_dir)
    db = sqlite3.connect(workspace / "ablate.db", timeout=60)
    runs = {r[0]: {"status": r[1], "mlflow_run_id": r[2], "attempts": r[3], "error": r[4], "step": r[5],
                   "epochs_done": r[6]}
            for r in db.execute("SELECT hash, status, mlflow_run_id, attempts, error, step, epochs_done "
                                "FROM runs")}
    cells = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    steps = {}
    for h, s in db.execute("SELECT run_hash, step FROM step_losses ORDER BY step"):
        steps.setdefault(h, []).append(s)
    epochs = {}
    for h, e in db.execute("SELECT run_hash, epoch FROM epoch_metrics ORDER BY epoch"):
        epochs.setdefault(h, []).append(e)
    configs = {h: c for h, c in db.execute("SELECT hash, config_json FROM runs")}
    db.close()

    by_status: dict = {}
    for r in runs.values():
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    finished_twice, calls, replayed, gaps = [], {}, [], []
    import json

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
            cfg = json.loads(configs[h])
            n_steps = cfg["epochs"] * (cfg["steps_per_epoch"] or 4)
            if steps.get(h) != list(range(1, n_steps + 1)) or epochs.get(h) != list(range(1, cfg["epochs"] + 1)):
                gaps.append(h)

    mlflow: dict = {}
    mlflow_db = workspace / "mlflow.db"
    if mlflow_db.exists():
        mdb = sqlite3.connect(mlflow_db, timeout=60)
        for run_uuid, status, value in mdb.execute(
                "SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'config_hash'"):
            mlflow.setdefault(value, []).append((run_uuid, status))
        mdb.close()
    return {"by_status": by_status, "runs": runs, "cells": cells, "finished_twice": finished_twice,
            "calls": calls, "replayed_after_ckpt": replayed, "history_gaps": gaps, "mlflow": mlflow,
            "locked": [h for h, r in runs.items() if r["error"] and "locked" in r["error"].lower()]}


def mlflow_problems(report: dict) -> list[str]:
    """Runs whose MLflow identity is not one FINISHED run with the id the result store recorded."""
    problems = []
    for h, r in report["runs"].items():
        found = report["mlflow"].get(h, [])
        if r["status"] != "done":
            continue
        if len(found) != 1:
            problems.append(f"{h}: {len(found)} MLflow runs {found}")
        elif found[0][0] != r["mlflow_run_id"] or found[0][1] != "FINISHED":
            problems.append(f"{h}: MLflow {found[0]} but store says {r['mlflow_run_id']}")
    return problems


# -- a fleet of worker processes on one SQLite workspace ---------------------------------------------

def run_fleet(workdir: Path, *, workers: int, trials: int, step_s: float = 0.002, epochs: int = 1,
              steps: int = 2, lease_s: float = 60.0, poll_s: float = 0.2, start_method: str = "spawn",
              timeout_s: float = 600.0) -> dict:
    """Start ``workers`` processes on a fresh workspace over ~``trials`` fake trials; wait; audit."""
    import multiprocessing

    workdir = Path(workdir)
    workspace, log_dir = workdir / "ws", workdir / "calls"
    log_dir.mkdir(parents=True, exist_ok=True)
    study = workdir / "fleet.yaml"
    study.write_text(study_text("fleet", fleet_study(trials), epochs=epochs, steps=steps))
    from runner.orchestrate.scheduler import prepare_workspace
    from runner.orchestrate.session import Session

    session = Session.open(study, workspace=workspace)
    prepare_workspace(session)  # what `ablate run` does before it starts worker processes
    session.store.close()
    trainer = FakeTrainer(str(log_dir), step_s=step_s)
    context = multiprocessing.get_context(start_method)
    started = time.perf_counter()
    procs = [context.Process(target=worker_main, name=f"fleet-{i}", args=(
        str(study), str(workspace), f"fleet-w{i}", lease_s, poll_s, trainer, str(workdir / f"w{i}.log")))
        for i in range(workers)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(deadline - time.monotonic(), 1))
    wall = time.perf_counter() - started
    hung = [p.name for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    report = audit(workspace, log_dir)
    logs = "".join(f.read_text() for f in sorted(workdir.glob("w*.log")))
    report.update(workers=workers, wall_s=wall, exit_codes=[p.exitcode for p in procs], hung=hung,
                  locked_in_logs=logs.lower().count("locked"), worker_log=logs,
                  trials_per_s=report["by_status"].get("done", 0) / wall)
    return report


# -- writers to kill in the middle of a write ------------------------------------------------------

def checkpoint_writer(path: str, n_floats: int) -> None:
    """Write checkpoints with runner.tasks.mtl.train.save_checkpoint in a loop until killed; each holds a
    counter, a tensor filled with it, and the tensor's sum (to verify a loaded file is whole)."""
    import torch

    from runner.tasks.mtl.train import save_checkpoint

    i = 0
    while True:
        i += 1
        blob = torch.full((n_floats,), float(i))
        save_checkpoint(Path(path), {"epoch": i, "global_step": i, "blob": blob, "sum": float(blob.sum())})


def atomic_writer(path: str, n_bytes: int) -> None:
    """Rewrite ``path`` with runner.atomic in a loop until killed; each version is one repeated
    letter, so a torn file would mix letters or be short."""
    from runner.atomic import write_bytes_atomic

    i = 0
    while True:
        write_bytes_atomic(path, bytes([ord("a") + i % 26]) * n_bytes)
        i += 1

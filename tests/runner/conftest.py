"""Fixtures of the runner tests: tiny study files, a fake trainer, CLI helpers.

Kept local to ``tests/runner`` (the data tests have their own conftest below ``data/``). Test
modules get the helpers through the ``kit`` fixture, never ``from conftest import ...``: with
several conftest.py files in the tree that import resolves to whichever was loaded first.

Two speeds of trial:

* **real**: ResNet-18 on a synthetic set of 16 train / 8 val images at 64x128, 2 steps of batch 2
  per epoch (a second or two on the CPU). Used where the test is about what a real trial leaves
  behind (MLflow runs, artifacts, checkpoints, the workspace layout, the CLI).
* **fake**: :class:`FakeTrainer`, passed as ``WorkerOptions(trainer=...)`` to
  :func:`runner.orchestrate.worker.run_worker`. It calls the same hooks as ``runner.tasks.mtl.train.train`` and returns
  metrics that are a pure function of the config (grader rises with ``lr``), so winners are
  known in advance and hundreds of trials take seconds.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(Path(__file__).parent) not in sys.path:  # helper modules of these tests (store_rows.py)
    sys.path.insert(0, str(Path(__file__).parent))

# Every key a real trial needs to be fast; every study file below starts from these.
TINY_DEFAULTS = """\
defaults:
  data_root: synthetic
  synthetic_train: 16
  synthetic_val: 8
  synthetic_size: [64, 128]
  crop_size: [64, 128]
  encoder: resnet18
  encoder_weights: none
  head: plain
  decoder: none
  architecture: joint
  optimizer: adam
  lr: 0.001
  epochs: 1
  steps_per_epoch: 2
  batch_size: 2
  val_batch_size: 8
"""

# A chain of three studies (real training: 2 + 3 + 1 = 6 runs, 8 trials):
#   lr         grid over lr (start_from none)
#   weighting  2 variants x seeds 2; variant 'w55' re-states the base, so its seed-0 cell is the
#              lr winner's config again (trained once, shared by both studies)
#   longer     pinned epochs: 2 over the weighting winner, with a reason
CHAIN_STUDIES = TINY_DEFAULTS + """\
name: tiny
studies:
  - name: lr
    start_from: none
    grid: {lr: [0.001, 0.0001]}
  - name: weighting
    start_from: previous
    seeds: 2
    variants:
      - {name: w55, set: {loss_weight_seg: 0.5, loss_weight_depth: 0.5}}
      - {name: w64, set: {loss_weight_seg: 0.6, loss_weight_depth: 0.4}}
  - name: longer
    start_from: previous
    pin:
      set: {epochs: 2}
      reason: "two epochs: the tiny test wants a resumable trial"
    variants:
      - {name: plain, set: {head: plain}}
"""


def write_study_file(directory: Path, text: str, name: str = "studies.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(text)
    return path


@pytest.fixture
def chain_file(tmp_path) -> Path:
    return write_study_file(tmp_path, CHAIN_STUDIES)


# --------------------------------------------------------------------------- fake trainer
def fake_metrics(config) -> dict:
    """Deterministic final metrics of ``config``: grader rises with lr (and with the seg weight,
    a little), so the study's winner is the variant with the highest lr."""
    grader = 10.0 + 1000.0 * config.lr + 0.5 * config.loss_weight_seg + 0.01 * config.seed
    iou = 50.0 + grader
    return {"iou": iou, "si_logrmse": 20.0, "grader": grader}


class FakeTrainer:
    """A stand-in for ``runner.tasks.mtl.train.train`` with the same hooks and checkpoint file.

    ``calls`` counts calls per run directory (= run hash). ``stop_after_epoch`` makes the first
    call of a run raise :class:`runner.tasks.mtl.train.TrialInterrupted` after that epoch's checkpoint
    (as the real loop does when ``should_stop`` turns true). ``sleep_s`` slows each epoch down
    (concurrency tests). ``fail_when`` (config -> bool) makes a trial raise.
    """

    def __init__(self, *, stop_after_epoch: int | None = None, sleep_s: float = 0.0, fail_when=None):
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.stop_after_epoch = stop_after_epoch
        self.sleep_s = sleep_s
        self.fail_when = fail_when
        self.started_at_epoch: dict[str, list[int]] = {}

    def __call__(self, config, run_dir: Path, hooks):
        import torch

        from runner.tasks.mtl.data.miniscapes import CLASS_NAMES
        from runner.tasks.mtl.train import CHECKPOINT_NAME, TrainResult, TrialInterrupted

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.calls[run_dir.name] += 1
            first_call = self.calls[run_dir.name] == 1
        if self.fail_when is not None and self.fail_when(config):
            raise RuntimeError(f"fake failure (lr={config.lr})")
        ckpt = run_dir / CHECKPOINT_NAME
        epoch, step, history = 0, 0, []
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            epoch, step, history = state["epoch"], state["global_step"], state["history"]
        self.started_at_epoch.setdefault(run_dir.name, []).append(epoch)
        final = fake_metrics(config)
        steps = config.steps_per_epoch or 2
        while epoch < config.epochs:
            rows = []
            for _ in range(steps):
                step += 1
                rows.append({"step": step, "wall_time_s": 0.01 * step, "loss": 1.0 / step,
                             "loss_semseg": 0.6 / step, "loss_depth": 0.4 / step})
            hooks.on_steps(rows)
            if self.sleep_s:
                time.sleep(self.sleep_s)
            epoch += 1
            scale = epoch / config.epochs  # metrics climb to their final value
            row = {"epoch": epoch, "step": step, "wall_time_s": 0.01 * step, "lr": config.lr,
                   "loss": 1.0 / step, "loss_semseg": 0.6 / step, "loss_depth": 0.4 / step,
                   "iou": final["iou"] * scale, "si_logrmse": final["si_logrmse"],
                   "grader": final["grader"] * scale,
                   "iou_per_class": [final["iou"] * scale / 100.0] * len(CLASS_NAMES)}
            history.append(row)
            hooks.on_epoch(row)
            hooks.before_checkpoint()
            torch.save({"epoch": epoch, "global_step": step, "history": history}, ckpt)
            hooks.on_checkpoint(ckpt, epoch, step)
            if (first_call and self.stop_after_epoch is not None and epoch >= self.stop_after_epoch
                    and epoch < config.epochs):
                raise TrialInterrupted(f"interrupted at epoch {epoch}, step {step}")
            if hooks.should_stop():
                raise TrialInterrupted(f"interrupted at epoch {epoch}, step {step}")
        best = max(history, key=lambda r: r["grader"])
        return TrainResult(final=history[-1], best=best, params=1234, wall_time_s=0.01 * step,
                           device="cpu", epochs=epoch, steps=step, history=history)


@pytest.fixture
def fake_trainer():
    return FakeTrainer()


def run_fake(session, trainer, *, worker_id: str = "fake-worker", lease_s: float = 30.0, stop=None, **kw):
    """Run one in-process worker with ``trainer`` until the chain is done; its summary."""
    from runner.orchestrate.worker import StopFlag, WorkerOptions, run_worker

    options = WorkerOptions(worker_id=worker_id, lease_s=lease_s, poll_s=0.05, trainer=trainer, **kw)
    return run_worker(session, options, stop or StopFlag())


def open_session(study_file: Path, workspace: Path, profile: str | None = None):
    from runner.orchestrate.session import Session

    return Session.open(study_file, profile=profile, workspace=workspace)


# --------------------------------------------------------------------------- CLI
def invoke_cli(*args):
    """Invoke ``ablate`` in-process (typer's CliRunner): (exit code, stdout, stderr).

    An InputError escaping the command is mapped to its exit code (2), as ``runner.cli.main``
    does for the console script; any other exception is re-raised. The SIGINT/SIGTERM handlers
    that ``ablate run`` installs are restored afterwards.
    """
    from typer.testing import CliRunner

    from ablations.errors import InputError
    from runner.cli import app

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    code = result.exit_code
    if isinstance(result.exception, InputError):
        code = result.exception.exit_code
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    try:
        err = result.stderr
    except ValueError:
        err = ""
    return code, result.stdout, err


@pytest.fixture
def cli():
    return invoke_cli


def ablate_subprocess(*args: str, cwd: Path | None = None, timeout: float = 120):
    """Run the real console entry point in a subprocess (exit codes as a user sees them)."""
    return subprocess.run([sys.executable, "-c", "from runner.cli import main; main()", *map(str, args)],
                          cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the whole test session (skipped where it cannot run);
    tests take a database of their own with ``pg_cluster.fresh_db()``."""
    from pg_cluster import throwaway_cluster

    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (and module-scoped fixtures)."""
    import types

    return types.SimpleNamespace(
        REPO=REPO, TINY_DEFAULTS=TINY_DEFAULTS, CHAIN_STUDIES=CHAIN_STUDIES, FakeTrainer=FakeTrainer,
        fake_metrics=fake_metrics, write_study_file=write_study_file, run_fake=run_fake,
        open_session=open_session, invoke_cli=invoke_cli, ablate_subprocess=ablate_subprocess)

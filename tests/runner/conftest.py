"""Fixtures of the runner tests: tiny study files, the shared fake task, the shared CLI helpers.

Test modules get the helpers through the ``kit`` fixture (or import ``tests.support`` directly).

Two speeds of trial:

* **real**: the built-in task ``mtl`` (ResNet-18 on a synthetic set of 16 train / 8 val images at
  64x128, 2 steps of batch 2 per epoch: a second or two on the CPU). Used where the test is about
  what a real trial leaves behind (MLflow runs, artifacts, checkpoints, the workspace layout).
* **fake**: the one fake task every test shares, ``tests/support/fake_task.py`` (``task:
  tests.support.fake_task``; :func:`fake_study`), trained by an in-process worker
  (:func:`run_fake`) or through the CLI. Its metrics are a pure function of the config (``score``
  rises with ``lr``, ``momentum`` and ``weight``), so winners are known in advance and hundreds of
  trials take seconds; with ``log_dir`` it writes down every call, step and checkpoint.
"""
from __future__ import annotations

import contextlib
import io
import types
from collections import Counter
from pathlib import Path

import pytest

from tests.support import fake_task
from tests.support.cli import cli_env, invoke_cli as invoke_in_process, run_cli, start_cli
from tests.support.study_files import FAKE_TASK, fake_study

REPO = Path(__file__).resolve().parents[2]

# Every key a real trial needs to be fast; every study file of the mtl task below starts from these.
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

# A chain of three studies (real training: 2 + 3 + 1 = 6 runs, 7 trials):
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

# Two studies of the fake task for the cost preview (its ``cost``: one rate per ``step_s``).
# lr: 'fast' is the first variant (the projected winner), 'slow' costs more per step.
# more: 'same' restates the winner's lr, so on the projected base it is the fast trial again.
COST_STUDIES = """\
  - name: lr
    variants:
      - {name: fast, set: {lr: 0.01}}
      - {name: slow, set: {lr: 0.001, step_s: 0.01}}
  - name: more
    start_from: previous
    variants:
      - {name: same, set: {lr: 0.01}}
      - {name: wd, set: {weight_decay: 0.001}}
"""


def write_study_file(directory: Path, text: str, name: str = "studies.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(text)
    return path


@pytest.fixture
def chain_file(tmp_path) -> Path:
    return write_study_file(tmp_path, CHAIN_STUDIES)


# --------------------------------------------------------------------------- the fake task's runs
def calls(log_dir: Path) -> Counter:
    """How many times ``fit`` was called per run hash (the fake task's ``start`` lines)."""
    return Counter({path.stem: sum(word == "start" for word, _ in fake_task.read_log(log_dir, path.stem))
                    for path in Path(log_dir).glob("*.log")})


def starts(log_dir: Path, run_hash: str) -> list[int]:
    """The global step each call of ``fit`` for ``run_hash`` resumed at (0: from scratch)."""
    return [step for word, step in fake_task.read_log(log_dir, run_hash) if word == "start"]


def stop_after_checkpoints(log_dir: Path, n: int):
    """A worker's stop flag that turns true, as Ctrl-C would, once some run of ``log_dir`` has
    written ``n`` checkpoints: the fake task sees ``ctx.should_stop()`` at its next step, saves a
    checkpoint and returns, so the trial is ``interrupted`` right after its ``n``-th epoch."""
    from runner.orchestrate.worker import StopFlag

    class StopAfterCheckpoints(StopFlag):
        def __bool__(self) -> bool:
            if not self.event.is_set() and any(
                    sum(word == "ckpt" for word, _ in fake_task.read_log(log_dir, p.stem)) >= n
                    for p in Path(log_dir).glob("*.log")):
                self.set("SIGINT")
            return self.event.is_set()

    return StopAfterCheckpoints()


def run_fake(session, *, worker_id: str = "fake-worker", lease_s: float = 30.0, stop=None, **kw):
    """Run one in-process worker until the chain is done (or ``stop``); its summary."""
    from runner.orchestrate.worker import StopFlag, WorkerOptions, run_worker

    options = WorkerOptions(worker_id=worker_id, lease_s=lease_s, poll_s=0.05, **kw)
    return run_worker(session, options, stop if stop is not None else StopFlag())


def open_session(study_file: Path, workspace: Path, profile: str | None = None):
    from runner.orchestrate.session import Session

    return Session.open(study_file, profile=profile, workspace=workspace)


# --------------------------------------------------------------------------- CLI
def invoke_cli(*args) -> tuple[int, str, str]:
    """``ablate ARGS`` in this process (:func:`tests.support.cli.invoke_cli`) with its output
    captured here, so module-scoped fixtures can read it too: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code, _, _ = invoke_in_process(*args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli():
    return invoke_cli


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the whole test session (skipped where it cannot run);
    tests take a database of their own with ``pg_cluster.fresh_db()``."""
    from tests.support.engines.pg_cluster import throwaway_cluster

    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (and module-scoped fixtures)."""
    return types.SimpleNamespace(
        REPO=REPO, TINY_DEFAULTS=TINY_DEFAULTS, CHAIN_STUDIES=CHAIN_STUDIES, COST_STUDIES=COST_STUDIES,
        FAKE_TASK=FAKE_TASK,
        fake_task=fake_task, fake_study=fake_study, write_study_file=write_study_file, calls=calls,
        starts=starts, stop_after_checkpoints=stop_after_checkpoints, run_fake=run_fake,
        open_session=open_session, invoke_cli=invoke_cli, run_cli=run_cli, start_cli=start_cli, cli_env=cli_env)

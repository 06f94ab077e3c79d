"""The digits example (``examples/digits/``: a task of one's own beside its study file) run as a
user runs it: the two files copied into a directory of their own, then ``ablate run``,
``status``, ``results`` and ``report`` there through the real console entry point. The chain is
the example's, shortened (3 epochs, 2 seeds a variant: 20 trials) to keep the test fast.

Then a ``kill -9`` of ``ablate run`` in the middle of a longer trial and a second ``ablate
run``: the trial resumes from its checkpoint (the epochs before it are not trained again) and
ends done, with one FINISHED MLflow run.

Every expectation is checked against the numbers in the result store, read back through its
typed records: the winner of each study is its best mean ``val_accuracy`` (ties: lowest mean
``val_loss``, then file order), the example's objective.
"""
from __future__ import annotations

import ast
import io
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ROOT, run_cli, start_cli

EXAMPLE = ROOT / "examples" / "digits"
STUDIES = {"optimizer": ["optimizer=sgd,lr=0.05", "optimizer=sgd,lr=0.2", "optimizer=adam,lr=0.001",
                         "optimizer=adam,lr=0.01"],
           "width": ["hidden=16", "hidden=64", "hidden=256"], "dropout": ["none", "light", "heavy"]}
SEEDS = 2


def copy_example(directory: Path, studies_text: str | None = None) -> Path:
    """The example's task, and its study file (or ``studies_text``), copied into ``directory``."""
    shutil.copy(EXAMPLE / "digits_task.py", directory)
    study_file = directory / "studies.yaml"
    study_file.write_text(studies_text if studies_text is not None else (EXAMPLE / "studies.yaml").read_text())
    return study_file


def open_read_only(study_file: Path):
    from runner.orchestrate.session import Session

    return Session.open(study_file, read_only=True)


def stored_states(study_file: Path) -> dict:
    """Each study's state as the store has it (cells with their final metrics)."""
    from runner.orchestrate.walk import studies_in_scope, survey

    session = open_read_only(study_file)
    return {s.name: s for s in survey(session, studies_in_scope(session, None))}


def expected_winner(cells) -> tuple[str, float, str]:
    """(winner, its mean val_accuracy, the metric that decided it) by the example's objective,
    restated: highest mean val_accuracy over the seeds, ties by the lowest mean val_loss."""
    means: dict[str, tuple[float, float]] = {}
    for variant in dict.fromkeys(c.variant for c in cells):
        mine = [c for c in cells if c.variant == variant]
        assert all(c.status == "done" for c in mine)
        means[variant] = tuple(sum(c.metrics[m] for c in mine) / len(mine) for m in ("val_accuracy", "val_loss"))
    ranked = sorted(means, key=lambda v: (-means[v][0], means[v][1]))  # stable: file order last
    first, second = means[ranked[0]], means[ranked[1]]
    decided = "val_accuracy" if first[0] != second[0] else "tie-break val_loss (tied on val_accuracy)"
    return ranked[0], first[0], decided


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the status table, by study (cells stripped; a row wrapped over several lines
    joined back)."""
    rows: dict[str, list[str]] = {}
    last = None
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells[0]:
            last = rows[cells[0]] = cells
        elif last is not None:
            last[:] = [f"{a} {b}".strip() for a, b in zip(last, cells)]
    return rows


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The example copied into a directory of its own and run there (shortened); the run's result."""
    root = tmp_path_factory.mktemp("digits")
    text = (EXAMPLE / "studies.yaml").read_text()
    assert text.count("  epochs: 12\n") == 1 and text.count("seeds: 3\n") == len(STUDIES)
    study_file = copy_example(root, text.replace("  epochs: 12\n", "  epochs: 3\n").replace(
        "seeds: 3\n", f"seeds: {SEEDS}\n"))
    run = run_cli("run", study_file.name, "--no-progress", cwd=root, timeout=600)
    return {"root": root, "file": study_file, "run": run}


def test_run_trains_the_chain_and_status_shows_the_winners_on_val_accuracy(digits):
    run = digits["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    states = stored_states(digits["file"])
    assert list(states) == list(STUDIES)
    status = run_cli("status", "studies.yaml", cwd=digits["root"])
    assert status.returncode == 0, status.stderr
    rows = table_rows(status.stdout)
    for name, variants in STUDIES.items():
        cells = states[name].cells
        assert [c.variant for c in cells] == [v for v in variants for _ in range(SEEDS)]
        winner, mean, decided = expected_winner(cells)
        assert states[name].winner.variant == winner
        # study, done, running, failed, pruned, interrupted, pending, winner, objective (mean),
        # decided by, seeds (the winner's vs its runner-up's)
        assert rows[name] == [name, str(len(cells)), "0", "0", "0", "0", "0", winner,
                              f"val_accuracy {mean:.3f}", decided, f"{SEEDS} vs {SEEDS}"], status.stdout
    assert (digits["root"] / "ablate-runs" / "ablate.db").is_file()  # the workspace beside the study file


def test_results_csv_has_a_column_per_metric_and_per_varied_key(digits):
    import pandas as pd

    done = run_cli("results", "studies.yaml", "--format", "csv", cwd=digits["root"])
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(io.StringIO(done.stdout))
    assert {"val_accuracy", "val_loss", "optimizer", "lr", "hidden", "dropout"} <= set(frame.columns)
    assert not {"grader", "iou", "si_logrmse"} & set(frame.columns)
    states = stored_states(digits["file"])
    assert len(frame) == sum(len(s.cells) for s in states.values()) == SEEDS * 10
    for state in states.values():
        winner, _, _ = expected_winner(state.cells)
        for cell in state.cells:
            (row,) = frame[(frame["study"] == state.name) & (frame["variant"] == cell.variant)
                           & (frame["seed"] == cell.seed)].to_dict("records")
            assert row["val_accuracy"] == pytest.approx(cell.metrics["val_accuracy"])
            assert row["val_loss"] == pytest.approx(cell.metrics["val_loss"])
            for key in ("optimizer", "lr", "hidden", "dropout"):
                assert row[key] == cell.config[key], key
            assert row["winner"] == (cell.variant == winner)


def test_report_tables_are_headed_by_the_digits_metrics(digits):
    done = run_cli("report", "studies.yaml", cwd=digits["root"])
    assert done.returncode == 0, done.stderr
    report = digits["root"] / "ablate-runs" / "report" / "report.md"
    assert done.stdout.strip().endswith(str(report))
    text = report.read_text()
    assert "Objective: val_accuracy (max), ties: val_loss (min)." in text
    assert not {"grader", "IoU", "SI-logRMSE"} & set(text.replace("|", " ").split())
    headers = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
               if line.startswith("| Variant |")]
    assert len(headers) == len(STUDIES)
    for header in headers:  # the objective first, then the other metric
        assert header[1] == "val_accuracy" and "val_loss" in header[2:], header
    states = stored_states(digits["file"])
    for name in STUDIES:
        winner, mean, _ = expected_winner(states[name].cells)
        assert f"| **{winner}** (winner) | **{mean:.3f} ± " in text, name
        assert f"| `{winner}` | {mean:.3f} |" in text, name  # the summary's row of the study


def test_the_readme_task_example_is_short_and_imports_nothing_of_ablate():
    """The README's "Your own task" is ``examples/digits/digits_task.py``: under 60 lines, and a
    task needs nothing of ablate (it is loaded by name from the study file)."""
    source = (EXAMPLE / "digits_task.py").read_text()
    assert len(source.splitlines()) < 60
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported.add(node.module.split(".")[0])
    assert imported and not imported & {"ablations", "runner", "models", "reports", "ablate"}, imported


LONG = """\
name: digits-long
task: digits_task
workspace: ablate-runs
defaults: {epochs: 40}
studies:
  - name: long
    start_from: none
    variants:
      - {name: one, set: {}}
"""


def test_kill_9_in_the_middle_of_a_trial_resumes_it_from_its_checkpoint(tmp_path):
    """``kill -9`` of the ``ablate run`` process group once the trial has checkpointed past its
    second epoch; a second ``ablate run`` (after the first one's 5 s lease) resumes it: the epoch
    and step rows up to the checkpoint are the ones recorded before the kill, untouched, the rest
    follow once each, and the trial's one MLflow run ends FINISHED with no step logged twice."""
    import torch  # noqa: F401 - read_checkpoint's import, done before the clock of the trial runs
    from mlflow.tracking import MlflowClient

    from ablations import expand_study, load_study_file, profile_base
    from runner.orchestrate.context import read_checkpoint

    study_file = copy_example(tmp_path, LONG)
    plan = load_study_file(study_file)
    (trial,) = expand_study(plan.studies[0], profile_base(plan))
    run_hash = trial.config_hash
    ws = tmp_path / "ablate-runs"
    run_dir = ws / "runs" / run_hash
    first = start_cli("run", study_file.name, "--no-progress", "--lease", "5", cwd=tmp_path,
                      log=tmp_path / "first.log", start_new_session=True)
    try:
        def checkpointed_past_epoch_2():
            return run_dir.joinpath("checkpoint.pt").is_file() and read_checkpoint(run_dir).position.epoch >= 2

        while not checkpointed_past_epoch_2():
            try:
                first.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError("ablate run ended before the trial checkpointed its second epoch:\n"
                                 + (tmp_path / "first.log").read_text())
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)

    session = open_read_only(study_file)
    store = session.store
    killed = store.run(run_hash)
    position = read_checkpoint(run_dir).position  # what the next attempt resumes from
    assert killed.status == "running" and killed.attempts == 1  # the kill left it on its lease
    assert 2 <= position.epoch < 40
    epochs_before = store.epochs([run_hash])
    steps_before = store.steps(run_hash)
    assert [e.epoch for e in epochs_before][:position.epoch] == list(range(1, position.epoch + 1))
    assert [s.step for s in steps_before][:position.step] == list(range(1, position.step + 1))

    second = run_cli("run", study_file.name, "--no-progress", cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    run = store.run(run_hash)
    assert run.status == "done" and run.attempts == 2 and run.epochs_done == 40
    assert run.tracking_run_id == killed.tracking_run_id
    epochs, steps = store.epochs([run_hash]), store.steps(run_hash)
    steps_per_epoch = position.step // position.epoch
    assert [e.epoch for e in epochs] == list(range(1, 41))
    assert [s.step for s in steps] == list(range(1, 40 * steps_per_epoch + 1))
    # not recomputed: the rows up to the checkpoint are those of the first attempt (the same
    # measured wall times), so the second attempt started at the checkpoint's epoch
    assert epochs[:position.epoch] == epochs_before[:position.epoch]
    assert steps[:position.step] == steps_before[:position.step]
    assert run.metrics["val_accuracy"] == epochs[-1].metrics["val_accuracy"]

    client = MlflowClient(f"sqlite:///{ws}/mlflow.db")
    experiment = client.get_experiment_by_name(session.experiment)
    (mlflow_run,) = client.search_runs([experiment.experiment_id], f"tags.config_hash = '{run_hash}'")
    assert mlflow_run.info.run_id == run.tracking_run_id and mlflow_run.info.status == "FINISHED"
    # each step at most once; every step of the resumed attempt. (Points the killed process had
    # queued but not yet written are lost: the store, not MLflow, is the record; see
    # runner/tracking/mlflow_run.py.)
    logged = sorted(m.step for m in client.get_metric_history(run.tracking_run_id, "loss"))
    assert len(logged) == len(set(logged)) and set(logged) <= set(range(1, 40 * steps_per_epoch + 1))
    assert set(range(position.step + 1, 40 * steps_per_epoch + 1)) <= set(logged)
    assert [m.step for m in client.get_metric_history(run.tracking_run_id, "val_accuracy")] == \
        [e.step for e in epochs]

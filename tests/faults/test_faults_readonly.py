"""Faults 8 and 14, and read commands that wrote: what ``status``, ``results``, ``inspect`` and
``report`` may touch, and what a run accepts as a cell's result.

* 8: two study files with one ``name:`` in one workspace. (a) The read commands of one never
  write the store (it was re-pointed to their configs); (b) a run never takes a result for a
  config its own file does not declare, even when another writer re-points one of its cells
  while it runs; (c) a run of a second file with the name refuses, naming both files.
* 14: a study whose variant is invalid only on the winner it inherits: ``status`` and
  ``results`` still answer (the study shown blocked with the reason), and ``run`` trains every
  study that does not depend on it, then exits 2 with the message.
* Read commands on a workspace that does not exist answer from the study file and create
  nothing (``inspect`` without ``--workspace`` made ``./ablate-runs/ablate.db``).
"""
from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

import runner.orchestrate.worker
from tests.faults.fault_helpers import ablate_messages, runs_by_variant
from tests.support.cli import invoke_cli
from tests.support.study_files import fake_study


@pytest.fixture
def ablate(capsys):
    """``ablate ARGS`` in this process: (exit code, stdout, stderr)."""
    return lambda *args: invoke_cli(*args, capsys=capsys)


def _dump(ws: Path) -> dict:
    """Every row of the result database's tables."""
    db = sqlite3.connect(ws / "ablate.db")
    try:
        return {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}")))
                for t in ("ablate_meta", "studies", "runs", "trials", "run_metrics", "epoch_metrics", "step_metrics")}
    finally:
        db.close()


def _two_files(tmp_path: Path) -> tuple[Path, Path]:
    """A.yaml and B.yaml: one name, one study, the same cells (lr=...) but other configs for them."""
    a, b = tmp_path / "A.yaml", tmp_path / "B.yaml"
    a.write_text(fake_study("same", [("first", {"lr": [0.001, 0.002]})], epochs=1, steps_per_epoch=2))
    b.write_text(fake_study("same", [("first", {"lr": [0.001, 0.002]})], epochs=2, steps_per_epoch=2))
    return a, b


def test_read_commands_of_another_file_with_the_name_write_nothing(tmp_path, ablate):
    a, b = _two_files(tmp_path)
    ws = tmp_path / "ws"
    code, out, err = ablate("run", b, "--workspace", ws, "--no-progress")
    assert code == 0, out + err
    before = _dump(ws)
    code, out, err = ablate("status", a, "--workspace", ws)
    assert code == 0, err
    assert "│ first │ 0 │ 0 │ 0 │ 0 │ 0 │ 2 │" in " ".join(out.split())  # A's own configs: not trained
    code, out, err = ablate("results", a, "--workspace", ws, "--format", "csv")
    assert code == 0 and {r["status"] for r in csv.DictReader(io.StringIO(out))} == {"pending"}, err
    assert ablate("inspect", a, "--workspace", ws, "--no-params")[0] == 0
    assert ablate("report", a, "--workspace", ws, "--no-log")[0] == 0
    assert _dump(ws) == before
    code, out, err = ablate("status", b, "--workspace", ws)
    assert code == 0 and "│ first │ 2 │ 0 │ 0 │ 0 │ 0 │ 0 │" in " ".join(out.split())


def test_a_run_does_not_accept_a_result_for_a_config_its_file_does_not_declare(tmp_path, ablate, monkeypatch):
    """While B runs, another writer points B's not yet trained cell at a finished run of another
    config (what ``ablate status A.yaml`` did): B still trains its own config for that cell."""
    from runner.store import ResultStore, sqlite_url

    a, b = _two_files(tmp_path)
    ws = tmp_path / "ws"
    code, out, err = ablate("run", a, "--workspace", ws, "--no-progress")  # A's configs, done
    assert code == 0, out + err
    a_done = {variant: run for (_, variant, _), run in runs_by_variant(ws).items()}
    (ws / "ablate.db").rename(tmp_path / "a.db")  # B starts on a store of its own ...
    repointed = []
    execute = runner.orchestrate.worker.execute

    def repoint_then_train(session, claimed, options, stop):
        if not repointed:  # ... and while it trains its first cell, its other cell is re-pointed
            b_store = ResultStore(sqlite_url(ws / "ablate.db"))
            sid = b_store.find_study("same", "default", "first").id
            cell = next(c for c in b_store.study_cells(sid) if c.status == "pending")
            other = a_done[cell.variant]
            b_store.add_trial(sid, cell.variant, cell.seed, config=other.config, config_hash=other.hash,
                              task=other.task)
            assert b_store.claim_run(other.hash, "another-writer", 60) is not None  # and marks it done
            assert b_store.finish_run(other.hash, "another-writer", "done", metrics={"score": 99.0, "error": 1.0},
                                      epochs_done=1)
            b_store.close()
            repointed.append(cell.variant)
        return execute(session, claimed, options, stop)

    monkeypatch.setattr(runner.orchestrate.worker, "execute", repoint_then_train)
    code, out, err = ablate("run", b, "--workspace", ws, "--no-progress")
    assert code == 0, out + err
    cells = runs_by_variant(ws)
    assert repointed and {r.status for r in cells.values()} == {"done"}
    for (_, variant, _), run in cells.items():  # every cell holds B's config (2 epochs), trained
        assert run.epochs_done == 2 and run.metrics["score"] != 99.0, (variant, run)
        assert run.hash != a_done[variant].hash


def test_a_second_study_file_with_the_name_is_refused_naming_both(tmp_path, ablate):
    a, b = _two_files(tmp_path)
    ws = tmp_path / "ws"
    assert ablate("run", a, "--workspace", ws, "--no-progress")[0] == 0
    before = _dump(ws)
    code, out, err = ablate("run", b, "--workspace", ws, "--no-progress")
    assert code == 2 and "Traceback" not in err and len(ablate_messages(err)) == 1, err
    assert str(a) in err and str(b) in err and "name 'same'" in err
    assert _dump(ws) == before
    moved = tmp_path / "moved" / "A.yaml"  # the same file, moved: it is still that study
    moved.parent.mkdir()
    a.rename(moved)
    assert ablate("run", moved, "--workspace", ws, "--no-progress")[0] == 0


CHAIN = """\
name: late
task: tests.support.fake_task
defaults: {epochs: 1, steps_per_epoch: 2}
studies:
  - name: weights
    variants:
      - {name: weight0, set: {weight: 0.0, lr: 0.002}}
      - {name: weight5, set: {weight: 0.5, lr: 0.001}}
  - name: zero
    start_from: previous
    variants:
      - {name: momentum0, set: {momentum: 0.0}}
  - name: after_zero
    start_from: previous
    grid: {lr: [0.003]}
  - name: other
    start_from: weights
    grid: {momentum: [0.8, 0.7]}
"""


def test_an_error_known_only_after_a_winner_blocks_that_study_alone(tmp_path, ablate):
    """``weight0`` wins (valid on its own); ``momentum0`` on it sets momentum and weight to 0,
    which the fake task's Config refuses."""
    study = tmp_path / "late.yaml"
    study.write_text(CHAIN)
    ws = tmp_path / "ws"
    code, out, err = ablate("run", study, "--workspace", ws, "--no-progress")
    assert code == 2 and "Traceback" not in err and len(ablate_messages(err)) == 1, err
    assert "momentum0" in err and "momentum + weight must be > 0" in err
    runs = runs_by_variant(ws)
    assert {k[0] for k in runs} == {"weights", "other"}  # what does not depend on 'zero' ran
    assert {r.status for r in runs.values()} == {"done"}

    code, out, err = ablate("status", study, "--workspace", ws)
    flat = " ".join(out.split())
    assert code == 0, err
    assert "│ weights │ 2 │" in flat and "│ other │ 2 │" in flat
    assert "blocked: cannot run" in flat and "waiting for zero (blocked: zero cannot run)" in flat
    assert "blocked zero:" in flat and "momentum0" in flat
    code, out, err = ablate("results", study, "--workspace", ws, "--format", "csv")
    assert code == 0, err
    assert sorted(r["study"] for r in csv.DictReader(io.StringIO(out))) == ["other", "other", "weights", "weights"]
    code, out, err = ablate("inspect", study, "--workspace", ws, "--no-params")
    assert code == 0 and "blocked: " in out, err
    assert ablate("run", study, "--workspace", ws, "--no-progress")[0] == 2  # nothing left to train: still said


def test_read_commands_on_a_missing_workspace_answer_and_create_nothing(tmp_path, ablate, monkeypatch):
    study = tmp_path / "fresh.yaml"
    study.write_text(fake_study("fresh", [("first", {"lr": [0.001, 0.002]}), ("second", {"momentum": [0.8]})]))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    ws = tmp_path / "ws"
    code, out, err = ablate("status", study, "--workspace", ws)
    assert code == 0 and "│ first │ 0 │ 0 │ 0 │ 0 │ 0 │ 2 │" in " ".join(out.split()), err
    code, out, err = ablate("results", study, "--workspace", ws, "--format", "csv")
    assert code == 0 and [r["status"] for r in csv.DictReader(io.StringIO(out))] == ["pending", "pending"]
    code, out, err = ablate("inspect", study, "--workspace", ws)  # counts parameters, caches nothing
    assert code == 0 and out.count("#params") == 3, err
    code, out, err = ablate("inspect", study, "--no-params")  # no --workspace: ./ablate-runs
    assert code == 0, err
    assert not ws.exists() and list(cwd.iterdir()) == []
    code, out, err = ablate("report", study, "--workspace", ws)  # the report only, no database
    assert code == 0 and sorted(p.name for p in ws.iterdir()) == ["report"], err

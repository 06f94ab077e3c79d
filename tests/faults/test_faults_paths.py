"""Fault 6: workspace paths pasted into database URLs; and a study file's relative ``workspace:``.

Real directories whose names hold ``?``, ``#``, ``%``, a space and non-ASCII letters: every file a
run writes lands inside its own workspace, and two workspaces never share a database. A path
MLflow's SQLite URI cannot carry (``?``, ``%``) is refused for the MLflow store with a one-line
message naming the workspace and the character, before anything is written; the result store
and Optuna's storage take any path (given another MLflow store, such a workspace runs).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.faults.fault_helpers import ablate_messages, runs_by_variant
from tests.support.cli import invoke_cli

# one grid study and one search study (Optuna's storage is used too)
STUDY = """\
name: paths
task: tests.support.fake_task
defaults: {epochs: 1, steps_per_epoch: 2}
studies:
  - name: first
    grid: {lr: [0.001, 0.002]}
  - name: tune
    start_from: previous
    search:
      sampler: random
      n_trials: 2
      space: {weight_decay: {type: loguniform, low: 0.00001, high: 0.001}}
"""


@pytest.fixture
def ablate(capsys):
    """``ablate ARGS`` in this process: (exit code, stdout, stderr)."""
    return lambda *args: invoke_cli(*args, capsys=capsys)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _cells(ws: Path) -> list[tuple]:
    db = sqlite3.connect(ws / "ablate.db")
    try:
        return db.execute("SELECT t.variant, r.status FROM trials t JOIN runs r ON r.hash = t.run_hash "
                          "ORDER BY t.variant").fetchall()
    finally:
        db.close()


def _check_run(root: Path, ws: Path) -> None:
    """The run trained every cell, its stores are its own files inside ``ws``, nothing is outside."""
    assert {p.parent for p in _files(root) if p.name.endswith(".db")} == {ws}
    assert {p.name for p in ws.glob("*.db")} == {"ablate.db", "mlflow.db", "optuna.db"}
    assert [status for _, status in _cells(ws)] == ["done"] * 4
    assert list((ws / "mlartifacts").rglob("config.yaml"))  # MLflow's artifacts went in too


@pytest.mark.parametrize("name", ["a#b", "sp ace", "naïve-ß"])
def test_a_workspace_path_with_url_characters_keeps_every_file_inside(name, tmp_path, ablate):
    study, root = tmp_path / "paths.yaml", tmp_path / "root"
    study.write_text(STUDY)
    ws = root / name
    code, out, err = ablate("run", study, "--workspace", ws, "--no-progress")
    assert code == 0, out + err
    _check_run(root, ws)
    assert [p.name for p in root.iterdir()] == [name]  # MLflow made no directory of an escaped name


@pytest.mark.parametrize("names", [("x?a", "x?b"), ("p%41q", "pAq")])
def test_workspaces_whose_paths_differ_in_url_syntax_never_share_a_database(names, tmp_path, ablate):
    """``x?a`` / ``x?b`` were one database outside both; ``p%41q`` was ``pAq``. MLflow cannot take
    such a path: its store is refused, by name; given one elsewhere, the workspaces run apart."""
    study, root = tmp_path / "paths.yaml", tmp_path / "root"
    study.write_text(STUDY)
    root.mkdir()
    bad = "?" if "?" in names[0] else "%"
    code, out, err = ablate("run", study, "--workspace", root / names[0], "--no-progress")
    assert code == 2 and "Traceback" not in err and len(ablate_messages(err)) == 1, err
    assert f"workspace {root / names[0]}: its path contains {bad!r}" in err
    assert list(root.iterdir()) == []  # refused before anything was written

    for i, name in enumerate(names):
        tracking = tmp_path / f"tracking{i}"
        code, out, err = ablate("run", study, "--workspace", root / name, "--no-progress",
                                "--tracking-uri", f"sqlite:///{tracking}/mlflow.db")
        assert code == 0, out + err
        assert {p.name for p in (root / name).glob("*.db")} == {"ablate.db", "optuna.db"}
        assert [status for _, status in _cells(root / name)] == ["done"] * 4
        code, out, err = ablate("status", study, "--workspace", root / name)
        assert code == 0 and "lr=0.002" in out, err
    assert sorted(p.name for p in root.iterdir()) == sorted(names)
    assert {p.parent.name for p in _files(root) if p.name.endswith(".db")} == set(names)


def test_a_relative_workspace_in_a_study_file_is_next_to_the_study_file(tmp_path, ablate, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    study = project / "paths.yaml"
    study.write_text(STUDY.replace("name: paths\n", "name: paths\nworkspace: runs-here\n"))
    monkeypatch.chdir(elsewhere)
    code, out, err = ablate("run", study, "--no-progress")
    assert code == 0, out + err
    assert list(elsewhere.iterdir()) == []
    assert len(runs_by_variant(project / "runs-here")) == 4
    code, out, err = ablate("status", Path("..") / "project" / "paths.yaml")  # from another directory
    assert code == 0 and str(project / "runs-here") in " ".join(out.split()).replace(" ", ""), out

"""Faults 2, 5 and 9 of the store files: a big grid's write path, damaged database files, and a
kill while MLflow creates its store.

* 2: writing a study's cells is one transaction whatever the grid's size; a worker's next pass
  and ``ablate status`` write nothing (counted with SQLAlchemy's event hooks, not timed).
* 5: a garbage, truncated or zero-length ``ablate.db`` / ``mlflow.db`` (really written so on disk)
  gives a one-line message naming the file and what to do (exit 2), and the file is left as it
  is; a zero-length ``ablate.db`` in a brand-new workspace still starts fine.
* 9: a process SIGKILLed in the middle of MLflow's migrations (it stops at a migration the test
  waits for) leaves no store that wedges the workspace: the next ``ablate run`` makes it and runs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.fault_helpers import ablate_messages, mlflow_runs_of, prepared, runs_by_variant, wait_for
from tests.support.cli import cli_env, invoke_cli
from tests.support.study_files import fake_study


@pytest.fixture
def ablate(capsys):
    """``ablate ARGS`` in this process: (exit code, stdout, stderr)."""
    return lambda *args: invoke_cli(*args, capsys=capsys)


def _count_statements(engine) -> Counter:
    """Transactions (BEGIN) and statements by their first word, as ``engine`` sends them."""
    from sqlalchemy import event

    seen: Counter = Counter()
    event.listen(engine, "begin", lambda conn: seen.update(["transaction"]))
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.update([statement.split()[0].upper()]))
    return seen


# -- 2: unbounded expansion ---------------------------------------------------------------------

def test_a_big_grid_is_written_in_one_transaction_and_status_writes_nothing(tmp_path):
    from runner.orchestrate.walk import materialize, studies_in_scope, survey
    from runner.orchestrate.session import Session

    first_pass = {}
    for n in (2, 600):
        study = tmp_path / f"grid{n}.yaml"
        study.write_text(fake_study(f"grid{n}", [("big", {"lr": [round(1e-5 * (i + 1), 8) for i in range(n)]})]))
        session = Session.open(study, workspace=tmp_path / f"ws{n}")
        seen = _count_statements(session.store.engine)
        (state,) = materialize(session, studies_in_scope(session, None))
        assert len(state.cells) == n and {c.status for c in state.cells} == {"pending"}
        first_pass[n] = dict(seen)

        seen.clear()  # a worker's next pass over an unchanged study: reads only
        materialize(session, studies_in_scope(session, None))
        assert seen["INSERT"] == seen["UPDATE"] == 0, seen

        reader = Session.open(study, workspace=tmp_path / f"ws{n}", read_only=True)  # ablate status
        seen = _count_statements(reader.store.engine)
        (state,) = survey(reader, studies_in_scope(reader, None))
        assert len(state.cells) == n and seen["INSERT"] == seen["UPDATE"] == 0, seen
    # 600 cells cost what 2 cost: one transaction writes them (it was one per cell); only the
    # look-ups by run hash (the runs already known, the cells' final metrics: schema 2 keeps them
    # as rows) take one more SELECT each per 500 hashes
    assert first_pass[600].pop("SELECT") == first_pass[2].pop("SELECT") + 2
    assert first_pass[600] == first_pass[2], first_pass
    assert first_pass[2]["INSERT"] <= 3  # the study row, the runs, the cells


# -- 5: damaged database files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workspace where a two-trial study of the fake task finished: ablate.db, mlflow.db, runs/."""
    from runner.orchestrate.worker import StopFlag, WorkerOptions, run_worker

    root = tmp_path_factory.mktemp("finished")
    study = root / "damage.yaml"
    study.write_text(fake_study("damage", [("first", {"lr": [0.001, 0.002]})], epochs=1, steps_per_epoch=2))
    session = prepared(study, root / "ws")
    options = WorkerOptions(worker_id="w", poll_s=0.05)
    assert run_worker(session, options, StopFlag()).trained == 2
    session.store.close()
    return root


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(finished / "ws", tmp_path / "ws")
    shutil.copy(finished / "damage.yaml", tmp_path / "damage.yaml")
    return tmp_path / "damage.yaml", tmp_path / "ws"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(code: int, out: str, err: str, path: Path) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = ablate_messages(err)
    assert len(lines) == 1 and lines[0].startswith(f"ablate: {path}: cannot be used as "), err
    return lines[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_result_database_is_named_and_left_alone(damage, finished, tmp_path, ablate):
    study, ws = _copy(finished, tmp_path)
    db = ws / "ablate.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(db.stat().st_size))
    else:
        os.truncate(db, db.stat().st_size // 2)
    before = {p.name: _digest(p) for p in ws.iterdir() if p.is_file()}
    for command in (["status"], ["results"], ["report", "--no-log"], ["run", "--no-progress"]):
        line = _one_line_error(*ablate(*command, study, "--workspace", ws), db)
        assert "result database" in line and "restore it from a backup" in line
    assert {p.name: _digest(p) for p in ws.iterdir() if p.is_file()} == before  # nothing overwritten


def test_a_zero_length_result_database_in_a_used_workspace_is_refused(finished, tmp_path, ablate):
    study, ws = _copy(finished, tmp_path)
    (ws / "ablate.db").write_bytes(b"")  # truncated to nothing: SQLite would read it as a new store
    mlflow_before = _digest(ws / "mlflow.db")
    for command in (["status"], ["run", "--no-progress"]):
        line = _one_line_error(*ablate(*command, study, "--workspace", ws), ws / "ablate.db")
        assert "empty (0 bytes)" in line and "checkpoints" in line
    assert (ws / "ablate.db").stat().st_size == 0 and _digest(ws / "mlflow.db") == mlflow_before


def test_a_zero_length_mlflow_store_in_a_used_workspace_is_refused(finished, tmp_path, ablate):
    study, ws = _copy(finished, tmp_path)
    (ws / "mlflow.db").write_bytes(b"")
    line = _one_line_error(*ablate("run", study, "--workspace", ws, "--no-progress", "--retry-failed"),
                           ws / "mlflow.db")
    assert "MLflow store" in line and "empty (0 bytes)" in line
    code, out, err = ablate("status", study, "--workspace", ws)  # status does not need MLflow
    assert code == 0 and "lr=0.002" in out, err
    code, out, err = ablate("report", study, "--workspace", ws)  # the report is written, and says why MLflow has none
    assert code == 2 and (ws / "report" / "report.md").is_file()
    assert "written, but not logged to the tracker" in err and "mlflow.db" in err and "Traceback" not in err
    assert (ws / "mlflow.db").stat().st_size == 0


def test_another_programs_database_is_not_taken_for_the_result_store(finished, tmp_path, ablate):
    study, ws = _copy(finished, tmp_path)
    shutil.copy(ws / "mlflow.db", ws / "ablate.db")
    before = _digest(ws / "ablate.db")
    line = _one_line_error(*ablate("status", study, "--workspace", ws), ws / "ablate.db")
    assert "database of another program" in line and "alembic_version" in line
    assert _digest(ws / "ablate.db") == before


def test_a_zero_length_result_database_in_a_new_workspace_starts_fine(tmp_path, ablate):
    study = tmp_path / "fresh.yaml"
    study.write_text(fake_study("fresh", [("first", {"lr": [0.001]})], epochs=1, steps_per_epoch=2))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "ablate.db").write_bytes(b"")  # a first run killed as SQLite opened the file
    code, out, err = ablate("run", study, "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 0, out + err
    assert [r.status for r in runs_by_variant(tmp_path / "ws").values()] == ["done"]


# -- 9: killed while MLflow creates its store ---------------------------------------------------

# Runs in a subprocess: creates the MLflow store as `ablate run` does ("ablate"), or as an older
# ablate did, MLflow migrating the workspace's mlflow.db in place ("in-place"); after the fifth
# migration MLflow records, it says so in MARKER and waits to be killed.
CREATE_AND_WAIT = r"""
import os, sys, time
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.engine import Engine

marker, how, study, workspace = sys.argv[1:5]
recorded = []

@event.listens_for(Engine, "before_cursor_execute")
def wait_mid_migration(conn, cursor, statement, *rest):
    if statement.lstrip().upper().startswith("UPDATE ALEMBIC_VERSION"):
        recorded.append(statement)
        if len(recorded) == 5:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(600)

if how == "ablate":
    from runner.orchestrate.scheduler import prepare_workspace
    from runner.orchestrate.session import Session
    prepare_workspace(Session.open(Path(study), workspace=Path(workspace)))
else:
    from mlflow.tracking import MlflowClient
    MlflowClient("sqlite:///" + str(Path(workspace) / "mlflow.db")).search_experiments()
"""


@pytest.mark.parametrize("how", ["ablate", "in-place"])
def test_a_kill_during_mlflow_store_creation_does_not_wedge_the_workspace(how, tmp_path, ablate):
    study, ws, marker = tmp_path / "kill.yaml", tmp_path / "ws", tmp_path / "mid-migration"
    study.write_text(fake_study("kill", [("first", {"lr": [0.001, 0.002]})], epochs=1, steps_per_epoch=2))
    ws.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", CREATE_AND_WAIT, str(marker), how, str(study), str(ws)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 180, "MLflow's fifth migration")
        assert marker.exists(), proc.communicate()[0]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    if how == "in-place":  # an older ablate's leftover: a half-migrated mlflow.db
        assert (ws / "mlflow.db").stat().st_size > 0

    code, out, err = ablate("run", study, "--workspace", ws, "--no-progress")
    assert code == 0, out + err
    runs = runs_by_variant(ws)
    assert [r.status for r in runs.values()] == ["done", "done"]
    for run in runs.values():
        assert mlflow_runs_of(ws, run.hash) == [(run.tracking_run_id, "FINISHED")]
    assert not list(ws.glob(".mlflow.db.creating*"))

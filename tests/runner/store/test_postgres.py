"""The result store and the workers on a real PostgreSQL server (the "many machines" setup).

The throwaway cluster comes from ``tests/support/engines/pg_cluster.py`` (the session-scoped
``pg_cluster`` fixture); where it cannot run, every test here is skipped with the reason. The
ResultStore primitives on PostgreSQL are checked by the conformance suite in ``test_store.py``,
which runs on both backends. The workers train the shared fake task (``tests/support/fake_task.py``),
which writes down every call, so a run trained twice is seen.

What is checked here:

* 8 worker processes on one PostgreSQL store train every cell of a 60-cell grid (and the 5-cell
  study chained after it) exactly once, with no failures and nothing left running;
* an Optuna search with its storage on the same server gives exactly n_trials Optuna trials;
* ``ablate status --db postgresql+psycopg2://...`` reads that store;
* the throughput of the 8-worker run on PostgreSQL vs the same on SQLite (printed; ``-s``).
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.study_files import fake_study

pytestmark = pytest.mark.timeout(300)

N_WORKERS = 8
LR = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.010, 0.011, 0.012]
MOMENTUM = [0.5, 0.6, 0.7, 0.8, 0.9]

# 12 x 5 = 60 grid cells, then a 5-variant study from the grid's winner (materialised by
# whichever workers pass by once the grid is finished: the chain's hand-over under contention).
GRID_STUDIES = fake_study("pg-grid", f"""\
  - name: grid
    start_from: none
    grid: {{lr: {LR}, momentum: {MOMENTUM}}}
  - name: after
    start_from: previous
    variants:
      - {{name: wd0, set: {{weight_decay: 0.0}}}}
      - {{name: wd1, set: {{weight_decay: 0.00001}}}}
      - {{name: wd2, set: {{weight_decay: 0.00002}}}}
      - {{name: wd3, set: {{weight_decay: 0.00003}}}}
      - {{name: wd4, set: {{weight_decay: 0.00004}}}}
""", lr=0.001, epochs=1, steps_per_epoch=2, log_dir="{log_dir}")  # the test fills in its log_dir
GRID_CELLS = len(LR) * len(MOMENTUM) + 5

N_SEARCH = 8
SEARCH_STUDIES = fake_study("pg-search", f"""\
  - name: lr_search
    start_from: none
    search:
      sampler: random
      n_trials: {N_SEARCH}
      space:
        lr: {{type: loguniform, low: 1.0e-5, high: 0.1}}
        momentum: {{type: uniform, low: 0.5, high: 0.95}}
""", lr=0.001, epochs=2, steps_per_epoch=2, log_dir="{log_dir}")


@pytest.fixture(scope="module")
def pg_url(pg_cluster) -> str:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/ablate``: the store of the worker tests."""
    return pg_cluster.createdb("ablate")


# --------------------------------------------------------------------------- (2) many workers
def _worker_entry(study_file: str, workspace: str, db_url: str, optuna_storage: str, index: int,
                  sync_dir: str) -> None:
    """A spawned worker process: open the session, import what a trial needs, say ready, wait for
    the common start (so the timing measures the workers, not interpreter start-up), run."""
    import sys

    import mlflow.tracking  # noqa: F401  - what the first trial would import
    import optuna  # noqa: F401

    from runner.orchestrate.session import Session
    from runner.orchestrate.worker import StopFlag, WorkerOptions, run_worker

    session = Session.open(Path(study_file), workspace=Path(workspace), db_url=db_url,
                           optuna_storage=optuna_storage)
    sync = Path(sync_dir)
    (sync / f"ready-{index}").touch()
    deadline = time.time() + 200
    while not (sync / "go").exists() and time.time() < deadline:
        time.sleep(0.01)
    summary = run_worker(session, WorkerOptions(worker_id=f"w{index}", lease_s=30, poll_s=0.05), StopFlag())
    session.store.close()
    sys.exit(10 + min(summary.failed, 9) if summary.failed else 0)


def _write_study(path: Path, text: str, log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("{log_dir}", str(log_dir)))
    return path


def _run_workers(study_file: Path, workspace: Path, db_url: str, optuna_storage: str, log_dir: Path, kit,
                 n: int = N_WORKERS) -> tuple[Counter, float]:
    """Start ``n`` spawned workers that begin together; (calls per run hash, seconds of work)."""
    sync = Path(tempfile.mkdtemp(prefix="sync-", dir=workspace))
    ctx = _context()
    procs = [ctx.Process(target=_worker_entry, name=f"pg-worker-{i}",
                         args=(str(study_file), str(workspace), db_url, optuna_storage, i, str(sync)))
             for i in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    try:
        deadline = time.time() + 180
        while len(list(sync.glob("ready-*"))) < n and time.time() < deadline:
            if any(p.exitcode is not None for p in procs):
                break
            time.sleep(0.02)
        started = time.time()
        print(f"\n[workers] {n} processes ready after {started - t0:.1f} s")
        (sync / "go").touch()
        for p in procs:
            p.join(timeout=max(1.0, started + 240 - time.time()))
        elapsed = time.time() - started
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * n, f"worker exit codes {[p.exitcode for p in procs]}"
    return kit.calls(log_dir), elapsed


def _context():
    """Fresh worker processes as ``ablate run`` makes them (module-level entry, pickled arguments,
    no state inherited from the test), but forked from a forkserver that imported torch, mlflow
    and optuna once: 8 spawned interpreters importing them take over a minute on 2 cores."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mlflow.tracking", "optuna", "sqlalchemy", "psycopg2",
                                "runner.orchestrate.worker", "runner.orchestrate.trial", "runner.orchestrate.search",
                                "runner.tracking.mlflow_tracker", "tests.support.fake_task"])
    return ctx


def _check_all_done_once(session, calls: Counter) -> None:
    from runner.orchestrate.walk import materialize, studies_in_scope

    states = materialize(session, studies_in_scope(session, None))
    trials = [t for s in states for t in session.store.study_cells(s.study_id)]
    assert len(trials) == GRID_CELLS
    hashes = {t.run_hash for t in trials}
    assert len(hashes) == GRID_CELLS  # every cell is its own config
    assert set(calls) == hashes, "every run trained"
    assert max(calls.values()) == 1, f"trained twice: {[h for h, c in calls.items() if c > 1]}"
    statuses = Counter(t.status for t in trials)
    assert statuses == {"done": GRID_CELLS}, statuses
    assert all(s.finished for s in states)
    winner = states[0].winner
    assert winner is not None and winner.config["lr"] == max(LR) and winner.config["momentum"] == max(MOMENTUM)
    assert states[1].base["lr"] == max(LR)


@pytest.fixture(scope="module")
def optuna_url(pg_cluster) -> str:
    """Optuna's storage: another database on the same server (see the search test)."""
    return pg_cluster.createdb("ablate_optuna")


@pytest.fixture(scope="module")
def grid_run(pg_url, optuna_url, tmp_path_factory, kit):
    """The 60+5-cell chain run by 8 worker processes on PostgreSQL (shared by tests 2 and 4)."""
    from runner.orchestrate.session import Session

    tmp = tmp_path_factory.mktemp("pg-grid")
    study_file = _write_study(tmp / "studies.yaml", GRID_STUDIES, tmp / "log")
    workspace = tmp / "ws"
    # Create the tables and MLflow's database once, so that the timed part is the workers.
    session = Session.open(study_file, workspace=workspace, db_url=pg_url, optuna_storage=optuna_url)
    _prepare(session)
    calls, elapsed = _run_workers(study_file, workspace, pg_url, optuna_url, tmp / "log", kit)
    return dict(session=session, study_file=study_file, workspace=workspace, calls=calls, elapsed=elapsed)


def _prepare(session) -> None:
    """The tracker's store and experiment (and Optuna's tables for a search), as ``ablate run``
    prepares them before it starts its workers."""
    from runner.orchestrate.scheduler import prepare_workspace

    prepare_workspace(session)


def test_many_workers_on_one_postgres_store(grid_run):
    session = grid_run["session"]
    assert session.store.engine.dialect.name == "postgresql"
    _check_all_done_once(session, grid_run["calls"])
    store = session.store
    runs = store.runs(list(grid_run["calls"]))  # every run of the grid (checked just above)
    assert [h for h, r in runs.items() if r.status == "running"] == []
    assert len(store.epochs(list(runs))) == GRID_CELLS
    assert sum(len(store.steps(h)) for h in runs) == 2 * GRID_CELLS
    assert len({r.worker for r in runs.values()}) > 1  # the work was shared
    rate = GRID_CELLS / grid_run["elapsed"]
    print(f"\n[postgres] {N_WORKERS} workers: {GRID_CELLS} trials in {grid_run['elapsed']:.2f} s "
          f"= {rate:.1f} trials/s (fake task; MLflow on SQLite in the workspace)")


@pytest.mark.skipif(not os.environ.get("ABLATE_PG_BENCH"),
                    reason="the SQLite baseline of the throughput figure: set ABLATE_PG_BENCH=1 (about a minute)")
def test_many_workers_sqlite_baseline(grid_run, tmp_path, kit):
    """The same run on SQLite (same fake task, same MLflow setup): the figure to compare."""
    from runner.orchestrate.session import Session

    study_file = _write_study(tmp_path / "studies.yaml", GRID_STUDIES, tmp_path / "log")
    workspace = tmp_path / "ws"
    session = Session.open(study_file, workspace=workspace)
    try:
        assert session.store.engine.dialect.name == "sqlite"
        _prepare(session)
        calls, elapsed = _run_workers(study_file, workspace, session.store.url, session.optuna_storage,
                                      tmp_path / "log", kit)
        _check_all_done_once(session, calls)
    finally:
        session.store.close()
    pg_rate, sqlite_rate = GRID_CELLS / grid_run["elapsed"], GRID_CELLS / elapsed
    print(f"\n[sqlite]   {N_WORKERS} workers: {GRID_CELLS} trials in {elapsed:.2f} s = {sqlite_rate:.1f} trials/s"
          f"\n[compare]  postgres/sqlite throughput: {pg_rate / sqlite_rate:.2f}x")


# --------------------------------------------------------------------------- (3) Optuna search
def test_search_study_with_optuna_storage_on_postgres(pg_cluster, tmp_path, kit):
    import optuna

    from runner.orchestrate.search import optuna_study_name
    from runner.orchestrate.session import Session

    url = pg_cluster.createdb("search")
    # Optuna's storage in its own database on the same server: Optuna's tables "studies" and
    # "trials" have the same names as the result store's, so one database cannot hold both.
    optuna_url = pg_cluster.createdb("search_optuna")
    study_file = _write_study(tmp_path / "search.yaml", SEARCH_STUDIES, tmp_path / "log")
    workspace = tmp_path / "ws"
    session = Session.open(study_file, workspace=workspace, db_url=url, optuna_storage=optuna_url)
    try:
        # MLflow's store and Optuna's tables once, before the workers, as `ablate run` does (see
        # the test below)
        _prepare(session)
        calls, _ = _run_workers(study_file, workspace, url, optuna_url, tmp_path / "log", kit, n=4)
        from runner.orchestrate.walk import materialize, studies_in_scope

        (state,) = materialize(session, studies_in_scope(session, None))
        trials = session.store.study_cells(state.study_id)
        assert len(trials) == N_SEARCH
        assert all(t.status == "done" for t in trials), Counter(t.status for t in trials)
        assert sorted(t.optuna_trial for t in trials) == list(range(N_SEARCH))
        assert sum(calls.values()) == N_SEARCH and max(calls.values()) == 1

        ostudy = optuna.load_study(study_name=optuna_study_name(session, "lr_search", state.base),
                                   storage=optuna_url)
        assert len(ostudy.trials) == N_SEARCH
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ostudy.trials)
        by_number = {t.number: t for t in ostudy.trials}
        for t in trials:  # each cell is the Optuna trial it names, with its params and score
            ot = by_number[t.optuna_trial]
            assert t.config["lr"] == pytest.approx(ot.params["lr"])
            assert ot.value == pytest.approx(t.metrics["score"])
    finally:
        session.store.close()


def _prepare_optuna(url: str, results) -> None:
    from runner.store import prepare_optuna_storage

    try:
        prepare_optuna_storage(url)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_machines_starting_together_prepare_one_optuna_storage(pg_cluster):
    """8 processes (workers on as many machines) prepare one new Optuna storage on PostgreSQL at
    once. Without the advisory lock, 2-4 of 8 died with a unique violation on pg_type."""
    import optuna

    url = pg_cluster.fresh_db("optuna_race")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_prepare_optuna, args=(url, results)) for _ in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes == ["ok"] * 8, outcomes
    study = optuna.create_study(study_name="after", storage=url)  # the storage works
    assert optuna.load_study(study_name="after", storage=url).study_name == study.study_name


# --------------------------------------------------------------------------- (4) CLI
def test_cli_status_reads_the_postgres_store(grid_run, pg_url, kit, tmp_path):
    """``ablate status FILE --db postgresql+psycopg2://...`` (a real process) shows the 8-worker run."""
    workspace = grid_run["workspace"]
    done = kit.run_cli("status", grid_run["study_file"], "--db", pg_url, "--workspace", workspace, cwd=tmp_path,
                       timeout=120, env=kit.cli_env(COLUMNS="200"))
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in done.stdout.splitlines() if line.count("│") > 5}
    # columns: done running failed pruned interrupted pending winner objective decided-by
    assert rows["grid"][:6] == ["60", "0", "0", "0", "0", "0"], done.stdout
    assert rows["after"][:6] == ["5", "0", "0", "0", "0", "0"], done.stdout
    assert rows["grid"][6] != "-" and rows["after"][6] != "-"
    assert not (workspace / "ablate.db").exists(), "status must not fall back to the workspace's SQLite"

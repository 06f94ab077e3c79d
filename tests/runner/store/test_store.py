"""ResultStore conformance suite: claims, leases, heartbeats, idempotent metric writes, resets,
metrics of any names, typed records, and the schema check (earlier/newer databases refused).

Every test that takes ``store`` or ``store_url`` runs on both backends: SQLite (the workspace
default) and PostgreSQL (the many-machines store, a throwaway cluster from
``tests/support/engines/pg_cluster.py``, skipped with the reason where it cannot run), so a
behaviour cannot hold on one and drift on the other."""
from __future__ import annotations

import math
import re
import threading
import time

import pytest

from tests.support.store_rows import TASK, Step, add, record_epoch, steps, study

from runner.store import ResultStore, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ablate.db")
    return request.getfixturevalue("pg_cluster").fresh_db("store")


@pytest.fixture
def store(store_url):
    s = ResultStore(store_url)
    yield s
    s.close()


def test_tables_are_created_once_and_reopened(store, store_url):
    from sqlalchemy import inspect, text

    assert {"ablate_meta", "studies", "runs", "trials", "run_metrics", "epoch_metrics", "step_metrics"} <= set(
        inspect(store.engine).get_table_names())
    assert store._read(lambda c: c.execute(text(
        "SELECT value FROM ablate_meta WHERE key = 'schema_version'")).scalar()) == "2"
    add(store, study(store))
    again = ResultStore(store_url)  # a second store on existing tables: creation is a no-op
    try:
        assert again.run("h1").status == "pending"
    finally:
        again.close()


def _epochs(store, run_hash):
    return store.epochs([run_hash])


def _steps(store, run_hash):
    return [r.step for r in store.steps(run_hash)]


def test_ensure_study_and_add_trial_are_idempotent(store):
    sid = study(store)
    assert study(store) == sid
    assert add(store, sid) is True
    assert add(store, sid) is False  # same cell
    assert len(store.study_cells(sid)) == 1
    assert store.run("h1").status == "pending"


def test_claim_is_atomic_second_claim_returns_none(store):
    sid = study(store)
    add(store, sid)
    first = store.claim_run("h1", "w1", lease_s=60)
    assert first is not None and first.attempts == 1 and not first.resumed
    assert first.task == TASK and first.config == {"lr": 0.1, "seed": 0}
    assert store.claim_run("h1", "w2", lease_s=60) is None
    run = store.run("h1")
    assert run.status == "running" and run.worker == "w1" and run.attempts == 1


def test_concurrent_claims_have_exactly_one_winner(store_url):
    url = store_url
    setup = ResultStore(url)
    add(setup, study(setup))
    results, barrier = [], threading.Barrier(6)

    def claim(i):
        s = ResultStore(url)  # one engine per "worker"
        barrier.wait()
        results.append(s.claim_run("h1", f"w{i}", lease_s=60))
        s.close()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert setup.run("h1").attempts == 1


def test_lease_expiry_lets_another_worker_claim(store):
    sid = study(store)
    add(store, sid)
    assert store.claim_run("h1", "w1", lease_s=0.2) is not None
    assert store.claim_run("h1", "w2", lease_s=60) is None
    assert store.claimable_runs([sid]) == []
    time.sleep(0.3)
    assert store.claimable_runs([sid]) == ["h1"]
    taken = store.claim_run("h1", "w2", lease_s=60)
    assert taken is not None and taken.attempts == 2 and taken.resumed
    assert store.run("h1").worker == "w2"
    # the first worker's heartbeat and finish now fail: the run is not its own any more
    assert store.heartbeat("h1", "w1", 60) is False
    assert store.finish_run("h1", "w1", "done", metrics={"score": 9.0}) is False
    assert store.run("h1").metrics == {}  # the refused finish wrote no metric either
    assert store.finish_run("h1", "w2", "done", metrics={"score": 1.0}) is True
    assert store.run("h1").metrics == {"score": 1.0}


def test_heartbeat_by_owner_renews_and_by_non_owner_returns_false(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=1)
    before = store.run("h1").lease_expires
    assert store.heartbeat("h1", "w1", 100, epochs_done=3, step=7) is True
    run = store.run("h1")
    assert run.lease_expires > before + 50 and run.epochs_done == 3 and run.step == 7
    assert store.heartbeat("h1", "intruder", 100) is False
    assert store.run("h1").worker == "w1"


def test_finished_runs_are_not_claimable(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=60)
    store.finish_run("h1", "w1", "done", metrics={"score": 2.0})
    assert store.claimable_runs([sid]) == []
    assert store.claim_run("h1", "w2", lease_s=60) is None
    assert store.run("h1").lease_expires is None


def test_interrupted_run_is_claimable_again(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=60)
    store.finish_run("h1", "w1", "interrupted", error="interrupted (SIGINT)")
    assert store.claimable_runs([sid]) == ["h1"]
    again = store.claim_run("h1", "w2", lease_s=60)
    assert again.attempts == 2 and again.resumed and store.run("h1").error is None


def test_record_epoch_is_idempotent(store):
    sid = study(store)
    add(store, sid)
    record_epoch(store, "h1", 1, score=1.0, only_first=3.0)
    record_epoch(store, "h1", 1, score=5.0)  # a replayed epoch overwrites, all of its rows
    record_epoch(store, "h1", 2, score=6.0)
    rows = _epochs(store, "h1")
    assert [(r.epoch, r.metrics["score"]) for r in rows] == [(1, 5.0), (2, 6.0)]
    assert rows[0].metrics == {"score": 5.0, "aux": 0.5}


def test_record_steps_replaces_replayed_steps(store):
    sid = study(store)
    add(store, sid)
    rows = steps(1, 2, 3)
    store.record_steps("h1", rows)
    store.record_steps("h1", [Step(2, 9.0, {"loss": 7.0})] + rows[2:])  # replayed: step 2's rows replaced
    store.record_steps("h1", [])
    assert _steps(store, "h1") == [1, 2, 3]
    assert store.steps("h1")[1].metrics == {"loss": 7.0} and store.steps("h1")[1].wall_time_s == 9.0


def test_truncate_history_drops_rows_after_the_checkpoint(store):
    sid = study(store)
    add(store, sid)
    for e in (1, 2, 3):
        record_epoch(store, "h1", e)
    store.record_steps("h1", steps(*range(1, 7)))
    store.truncate_history("h1", after_step=4, after_epoch=2)
    assert [r.epoch for r in _epochs(store, "h1")] == [1, 2]
    assert _steps(store, "h1") == [1, 2, 3, 4]
    store.truncate_history("h1", after_step=0, after_epoch=0)
    assert _epochs(store, "h1") == [] and _steps(store, "h1") == []


def test_reset_failed_only_touches_failed_runs_of_the_given_studies(store):
    s1, s2 = study(store, "one", 0), study(store, "two", 1)
    add(store, s1, "a", run_hash="fa", lr=0.1)
    add(store, s1, "b", run_hash="ok", lr=0.2)
    add(store, s2, "a", run_hash="fb", lr=0.3)
    for h, status in (("fa", "failed"), ("ok", "done"), ("fb", "failed")):
        store.claim_run(h, "w", 60)
        store.finish_run(h, "w", status, error="boom" if status == "failed" else None)
    assert store.reset_failed([s1]) == 1
    assert store.run("fa").status == "pending" and store.run("fa").error is None
    assert store.run("ok").status == "done"
    assert store.run("fb").status == "failed"
    assert store.claimable_runs([s1, s2]) == ["fa"]
    assert store.claim_run("fb", "w", 60) is None  # failed stays failed until reset_failed


def test_cells_of_run_lists_every_cell_sharing_the_run(store):
    s1, s2 = study(store, "one", 0), study(store, "two", 1)
    add(store, s1, "winner", run_hash="shared")
    add(store, s2, "same_again", run_hash="shared")
    add(store, s2, "other", run_hash="other", lr=0.5)
    cells = store.cells_of_run("shared")
    assert [(c.study, c.variant) for c in cells] == [("one", "winner"), ("two", "same_again")]
    assert {c.plan for c in cells} == {"p"}
    assert store.claimable_runs([s1, s2]) == ["shared", "other"]  # a shared run is listed once


def _search_study(store, n: int) -> int:
    sid = store.ensure_study(plan="p", profile="default", name="search", position=0, kind="search",
                             start_from=None, pin=None, pin_reason=None, base_config={})
    for k in range(n):
        store.add_trial(sid, f"search-{k:03d}", 0, config=None, config_hash=None)
    return sid


def _bind(store, cell, optuna_study, number, lr, run_hash, **kw):
    return store.bind_search_cell(cell.id, optuna_study, number, {"lr": lr}, run_hash, {"lr": lr}, task=TASK, **kw)


def test_search_cells_are_claimed_once_and_released(store):
    sid = _search_study(store, 2)
    a = store.claim_search_cell(sid, "w1")
    b = store.claim_search_cell(sid, "w2")
    assert a.id != b.id and store.claim_search_cell(sid, "w3") is None
    assert a.claimed_by is None  # taken fresh, not from an expired claim
    store.release_search_cell(a.id)
    assert store.claim_search_cell(sid, "w3").id == a.id
    _bind(store, b, "p.default.search.base1", 0, 0.1, "hb")
    assert store.run("hb").status == "pending" and store.run("hb").task == TASK
    assert store.cells_of_run("hb")[0].optuna_trial == 0
    assert store.cells_of_run("hb")[0].optuna_study == "p.default.search.base1"


def test_an_expired_search_claim_is_taken_over_and_the_stalled_bind_refused(store):
    sid = _search_study(store, 1)
    first = store.claim_search_cell(sid, "w1", lease_s=0.2)
    assert store.claim_search_cell(sid, "w2") is None  # the claim holds
    time.sleep(0.3)
    second = store.claim_search_cell(sid, "w2")
    assert second.id == first.id and second.claimed_by == "w1" and second.optuna_trial == -1
    assert _bind(store, first, "s", 0, 0.1, "h_stalled", worker="w1") is False
    assert store.run("h_stalled") is None  # the run row rolled back with the refused bind
    assert _bind(store, second, "s", 1, 0.2, "h_ok", worker="w2") is True


def test_search_cells_of_an_old_base_are_put_back_unsampled(store):
    sid = _search_study(store, 3)
    old, new, claimed = (store.claim_search_cell(sid, "w") for _ in range(3))
    _bind(store, old, "s.old", 0, 0.1, "h_old")
    _bind(store, new, "s.new", 0, 0.2, "h_new")
    # `claimed` is being asked (optuna_trial -1, no study yet): not touched

    (stale,) = store.unbind_search_cells(sid, keep_optuna_study="s.new")
    assert (stale.id, stale.optuna_study, stale.optuna_trial) == (old.id, "s.old", 0)
    cells = {c.id: c for c in store.study_cells(sid)}
    assert cells[old.id].run_hash is None and cells[old.id].optuna_trial is None
    assert cells[new.id].run_hash == "h_new"
    assert cells[claimed.id].optuna_trial == -1
    assert store.run("h_old") is not None  # the run stays, keyed by its hash
    assert store.claim_search_cell(sid, "w2").id == old.id  # sampled again
    assert store.unbind_search_cells(sid, keep_optuna_study="s.new") == []


def test_edited_cell_points_at_the_new_config_and_keeps_the_old_run(store):
    study_id = study(store)
    assert add(store, study_id, run_hash="old", lr=0.1)
    assert not add(store, study_id, run_hash="new", lr=0.2)  # same cell, config edited
    (cell,) = store.study_cells(study_id)
    assert cell.run_hash == "new" and cell.config == {"lr": 0.2, "seed": 0} and cell.overrides == {"lr": 0.2}
    assert store.run("old") is not None  # reused if the old config comes back


def test_study_row_follows_the_study_file(store):
    first = store.ensure_study(plan="p", profile="x", name="s", position=0, kind="grid", start_from=None,
                               pin=None, pin_reason=None, base_config={"lr": 0.1})
    again = store.ensure_study(plan="p", profile="x", name="s", position=3, kind="variants", start_from="a",
                               pin={"lr": 1}, pin_reason="why", base_config={"lr": 0.2})
    row = store.find_study("p", "x", "s")
    assert first == again and row.position == 3 and row.pin_reason == "why"
    assert row.base_config == {"lr": 0.2} and row.pin == {"lr": 1} and row.kind == "variants"
    assert row.start_from == "a" and store.find_study("p", "x", "other") is None


def test_optuna_storage_must_not_be_the_result_store(tmp_path):
    from ablations.errors import InputError
    from runner.orchestrate.session import Session

    studies = tmp_path / "s.yaml"
    studies.write_text("name: t\nstudies:\n  - {name: a, start_from: none, grid: {lr: [0.1]}}\n")
    url = sqlite_url(tmp_path / "same.db")
    with pytest.raises(InputError, match="database of its own"):
        Session.open(studies, workspace=tmp_path / "ws", db_url=url, optuna_storage=url)


def test_a_database_of_an_earlier_version_gains_the_new_columns_and_keeps_its_rows(store, store_url):
    """A nullable column a later ablate adds (here ``trials.optuna_study``, as if it were new) is
    added to a schema-2 database that lacks it; a read-only open, which may not add it, says so."""
    from ablations.errors import InputError

    sid = study(store)
    add(store, sid)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE trials DROP COLUMN optuna_study")
    store.close()

    with pytest.raises(InputError, match=r"without the columns trials\.optuna_study: `ablate run` adds them"):
        ResultStore(store_url, read_only=True)
    reopened = ResultStore(store_url)
    try:
        (cell,) = reopened.study_cells(sid)
        assert cell.optuna_study is None and cell.run_hash == "h1"  # the stored row is kept
        _bind(reopened, cell, "p.default.s.tag", 0, 0.2, "h2")
        assert reopened.cells_of_run("h2")[0].optuna_study == "p.default.s.tag"
    finally:
        reopened.close()


def _cells(n, prefix="v", lr=0.1):
    from runner.store import Cell

    return [Cell(f"{prefix}{i}", 0, {"lr": lr, "i": i}, f"{prefix}-h{i}-{lr}", {"i": i}, TASK) for i in range(n)]


def test_add_trials_writes_every_cell_and_run_once_in_one_transaction(store):
    from sqlalchemy import event

    sid = study(store)
    begins = []
    event.listen(store.engine, "begin", lambda conn: begins.append(1))
    cells = _cells(1200)  # more than one IN list (500) of known runs
    assert store.add_trials(sid, cells) == 1200
    assert len(begins) == 1
    assert store.add_trials(sid, cells) == 0  # idempotent
    stored = store.study_cells(sid)
    assert [(r.variant, r.run_hash, r.status) for r in stored] == [
        (c.variant, c.config_hash, "pending") for c in cells]
    found = store.runs([c.config_hash for c in cells])
    assert found.keys() == {c.config_hash for c in cells}
    assert {r.task for r in found.values()} == {TASK}


def test_add_trials_points_changed_cells_at_their_new_run_and_shares_runs(store):
    from runner.store import Cell

    sid = study(store)
    store.add_trials(sid, _cells(3))
    edited = _cells(3, lr=0.2)[:2] + _cells(3)[2:]  # two cells changed config, one did not
    edited.append(Cell("same-config", 0, edited[0].config, edited[0].config_hash, {"i": 0}, TASK))  # shares a run
    assert store.add_trials(sid, edited) == 1
    assert [r.run_hash for r in store.study_cells(sid)] == [c.config_hash for c in edited]
    assert store.run("v-h0-0.1") is not None  # the old run stays, keyed by its hash
    assert store.cells_of_run(edited[0].config_hash)[1].variant == "same-config"
    # search cells have no config yet: written unsampled, never re-pointed by a rewrite
    assert store.add_trials(sid, [Cell("search-000", 0)]) == 1
    assert store.add_trials(sid, [Cell("search-000", 0)]) == 0
    assert store.study_cells(sid)[-1].run_hash is None
    with pytest.raises(ValueError, match="need the task"):  # a run is always keyed by its task
        store.add_trials(sid, [Cell("no-task", 0, {"lr": 1.0}, "h-no-task")])
    assert store.run("h-no-task") is None


def test_concurrent_add_trials_write_each_cell_once(store_url):
    """Workers that write one study's cells at once: on PostgreSQL the loser's INSERT violates a
    unique key and its transaction runs again; every call succeeds and each cell exists once."""
    setup = ResultStore(store_url)
    sid = study(setup)
    cells = _cells(200)
    results, errors, barrier = [], [], threading.Barrier(4)

    def write():
        s = ResultStore(store_url)
        barrier.wait()
        try:
            results.append(s.add_trials(sid, cells))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        s.close()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sum(results) == 200
    assert len(setup.study_cells(sid)) == 200
    setup.close()


def test_a_study_row_written_from_another_file_is_not_taken_silently(store):
    from runner.store import SourceConflict

    row = dict(plan="p", profile="x", name="s", position=0, kind="grid", start_from=None, pin=None,
               pin_reason=None, base_config={"lr": 0.1})
    sid = store.ensure_study(**row, source="/a/studies.yaml")
    assert store.ensure_study(**row, source="/a/studies.yaml") == sid
    with pytest.raises(SourceConflict) as conflict:
        store.ensure_study(**row, source="/b/studies.yaml")
    assert conflict.value.other == "/a/studies.yaml"
    assert store.find_study("p", "x", "s").source == "/a/studies.yaml"  # nothing written
    assert store.ensure_study(**row, source="/b/studies.yaml", take_over=True) == sid
    assert store.find_study("p", "x", "s").source == "/b/studies.yaml"


# -- metrics of any names -----------------------------------------------------------------------
def _same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_metrics_of_any_names_round_trip_final_epoch_and_step(store):
    from sqlalchemy import text

    nan = float("nan")
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w", 60)
    store.record_epoch("h1", 1, 10, 1.5, {"score": 0.1, "x.y/z name": 1, "gone": nan})
    store.record_epoch("h1", 2, 20, 3.0, {"score": 0.2, "x.y/z name": 2})
    store.record_steps("h1", [Step(1, 0.1, {"loss": 2.0, "nan_loss": nan}), Step(2, 0.2, {"loss": 1.0, "lr": 1e-4})])
    final = {"score": 0.25, "Per-Class IoU [road]": 1e-300, "huge": 1e300, "negative": -3.0, "nan_metric": nan,
             "an_int": 3}
    assert store.finish_run("h1", "w", "done", metrics=final, wall_time_s=3.0, params=7)

    run = store.run("h1")
    assert _same(run.metrics, {k: float(v) for k, v in final.items()})
    assert all(type(v) is float for v in run.metrics.values())
    assert run.wall_time_s == 3.0 and run.params == 7 and run.status == "done"
    (cell,) = store.study_cells(sid)
    assert _same(cell.metrics, run.metrics) and _same(store.runs(["h1", "nope"])["h1"].metrics, run.metrics)
    e1, e2 = store.epochs(["h1"])
    assert (e1.epoch, e1.step, e1.wall_time_s, e2.epoch, e2.step, e2.wall_time_s) == (1, 10, 1.5, 2, 20, 3.0)
    assert _same(e1.metrics, {"score": 0.1, "x.y/z name": 1.0, "gone": nan})
    assert e2.metrics == {"score": 0.2, "x.y/z name": 2.0}
    s1, s2 = store.steps("h1")
    assert (s1.step, s1.wall_time_s, s2.step, s2.wall_time_s) == (1, 0.1, 2, 0.2)
    assert _same(s1.metrics, {"loss": 2.0, "nan_loss": nan}) and s2.metrics == {"loss": 1.0, "lr": 1e-4}
    # NaN is stored as NULL on both backends (SQLite has no NaN), and read back as NaN
    assert store._read(lambda c: c.execute(text(
        "SELECT value FROM run_metrics WHERE name = 'nan_metric'")).scalar()) is None
    assert store.latest_epoch_values(["h1", "nope"], "score") == {"h1": 0.2}
    gone = store.latest_epoch_values(["h1"], "gone")  # only epoch 1 had it, as NaN
    assert list(gone) == ["h1"] and math.isnan(gone["h1"])
    with pytest.raises(ValueError, match="'bad': 'text' is not a number"):
        store.record_epoch("h1", 3, 30, 4.0, {"bad": "text"})


def test_latest_epoch_values_take_each_runs_latest_epoch_with_the_metric(store):
    sid = study(store)
    add(store, sid, "a", run_hash="ha")
    add(store, sid, "b", run_hash="hb", lr=0.2)
    record_epoch(store, "ha", 1, score=1.0)
    record_epoch(store, "ha", 3, score=3.0)
    store.record_epoch("ha", 4, 8, 4.0, {"aux": 1.0})  # epoch 4 without the metric
    record_epoch(store, "hb", 2, score=float("nan"))
    values = store.latest_epoch_values(["ha", "hb"], "score")
    assert values.keys() == {"ha", "hb"} and values["ha"] == 3.0 and math.isnan(values["hb"])


def test_finish_run_replaces_the_final_metrics(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w", 60)
    assert store.finish_run("h1", "w", "failed", error="boom", metrics={"old": 1.0, "score": 0.5})
    store.reset_failed([sid])
    store.claim_run("h1", "w", 60)
    assert store.finish_run("h1", "w", "interrupted")  # no metrics given: the rows are kept
    assert store.run("h1").metrics == {"old": 1.0, "score": 0.5}
    store.claim_run("h1", "w", 60)
    assert store.finish_run("h1", "w", "done", metrics={"score": 2.0})
    assert store.run("h1").metrics == {"score": 2.0}  # replaced, not merged


def test_a_finished_run_keeps_the_code_version_and_data_fingerprint_that_trained_it(store, store_url):
    """Recorded with the outcome (issue 12), read back on the run; a database of schema 2 from
    before these columns gains them on open, its runs reading None (not recorded)."""
    sid = study(store)
    add(store, sid)
    add(store, sid, "b", run_hash="h2")
    store.claim_run("h1", "w", 60)
    assert store.finish_run("h1", "w", "done", metrics={"score": 1.0}, code_version="git 1a2b dirty 3c ablate 0.1.0",
                            data_fingerprint="files-9f8e")
    run = store.run("h1")
    assert (run.code_version, run.data_fingerprint) == ("git 1a2b dirty 3c ablate 0.1.0", "files-9f8e")
    assert (store.run("h2").code_version, store.run("h2").data_fingerprint) == (None, None)
    with store.engine.begin() as conn:
        for column in ("code_version", "data_fingerprint"):
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {column}")
    store.close()
    reopened = ResultStore(store_url)
    try:
        old = reopened.run("h1")
        assert old.status == "done" and old.metrics == {"score": 1.0} and old.code_version is None
    finally:
        reopened.close()


# -- typed records, holders, hand-back ----------------------------------------------------------
def test_what_leaves_the_store_is_typed_records(store):
    import dataclasses

    from runner.store import (CellRecord, ClaimedRun, EpochRecord, PlanCell, RunCell, RunRecord, StepRecord,
                              StudyRecord)

    sid = study(store, "one", 0)
    add(store, sid)
    search = store.ensure_study(plan="p", profile="default", name="two", position=1, kind="search",
                                start_from="one", pin=None, pin_reason=None, base_config={})
    store.add_trial(search, "search-000", 0, config=None, config_hash=None)
    claimed = store.claim_run("h1", "w", 60)
    record_epoch(store, "h1", 1)
    store.record_steps("h1", steps(1))
    found = {
        StudyRecord: [store.find_study("p", "default", "one")],
        CellRecord: store.study_cells(sid) + [store.claim_search_cell(search, "w")],
        RunCell: store.cells_of_run("h1"),
        RunRecord: [store.run("h1"), *store.runs(["h1"]).values()],
        ClaimedRun: [claimed],
        EpochRecord: store.epochs(["h1"]),
        StepRecord: store.steps("h1"),
        PlanCell: store.plan_cells("p", "default", ["one", "two"]),
    }
    found[RunRecord] += store.hand_back_runs_of("w", "gone")
    for kind, records in found.items():
        assert records and all(type(r) is kind for r in records), kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            records[0].status = "changed"
    assert [(c.study, c.variant, c.run_hash, c.status) for c in found[PlanCell]] == [
        ("one", "a", "h1", "running"), ("two", "search-000", None, None)]
    assert found[StudyRecord][0].base_config == {"lr": 0.1}


def test_only_the_holder_writes_and_a_dead_workers_runs_are_handed_back(store):
    sid = study(store)
    add(store, sid)
    add(store, sid, "b", run_hash="h2", lr=0.2)
    store.claim_run("h1", "w1", 60)
    store.claim_run("h2", "w2", 60)
    assert store.holds("h1", "w1") and not store.holds("h1", "w2")
    assert store.update_own_run("h1", "w1", params=5, tracking_run_id="r1") is True
    assert store.update_own_run("h1", "w2", params=6) is False
    assert (store.run("h1").params, store.run("h1").tracking_run_id) == (5, "r1")
    (back,) = store.hand_back_runs_of("w1", "worker w1 died (SIGKILL)")
    assert (back.hash, back.status, back.worker) == ("h1", "running", "w1")  # as it was
    run = store.run("h1")
    assert (run.status, run.error, run.lease_expires) == ("interrupted", "worker w1 died (SIGKILL)", None)
    assert not store.holds("h1", "w1") and store.claimable_runs([sid]) == ["h1"]
    assert store.run("h2").status == "running"  # another worker's run is left alone
    assert store.hand_back_runs_of("w1", "again") == []
    with pytest.raises(ValueError, match="not a column of runs: score"):
        store.update_run("h1", score=1.0)
    with pytest.raises(ValueError, match="not a column of runs"):
        store.finish_run("h2", "w2", "done", final_score=1.0)
    assert store.run("h2").status == "running"


def test_a_read_only_store_creates_nothing_and_reads_a_missing_database_as_empty(store_url):
    from sqlalchemy import create_engine, inspect

    from runner.store import sqlite_path

    for reader in (ResultStore(store_url, read_only=True), ResultStore.empty()):
        assert reader.find_study("p", "default", "s") is None and reader.runs(["h1"]) == {}
        assert reader.study_cells(1) == [] and reader.claimable_runs([1]) == []
        with pytest.raises(RuntimeError, match="read-only"):
            study(reader)
        reader.close()
    path = sqlite_path(store_url)
    if path is not None:
        assert not path.exists() and not path.parent.joinpath("ablate.db-wal").exists()
    else:
        engine = create_engine(store_url)
        assert inspect(engine).get_table_names() == []
        engine.dispose()
    writer = ResultStore(store_url)
    add(writer, study(writer))
    writer.close()
    reader = ResultStore(store_url, read_only=True)
    try:
        assert reader.run("h1").status == "pending"
        with pytest.raises(RuntimeError, match="read-only"):
            reader.claim_run("h1", "w", 60)
    finally:
        reader.close()


# -- the schema check ---------------------------------------------------------------------------
# The tables as the first release (schema 1, `git show d9b52a9:runner/store.py`) created them.
SCHEMA_1 = [
    """CREATE TABLE studies (id {serial}, plan VARCHAR(200) NOT NULL, profile VARCHAR(100) NOT NULL,
       name VARCHAR(100) NOT NULL, position INTEGER NOT NULL, kind VARCHAR(20) NOT NULL,
       start_from VARCHAR(100), pin_json TEXT, pin_reason TEXT, base_json TEXT NOT NULL,
       created_at FLOAT NOT NULL, CONSTRAINT uq_study UNIQUE (plan, profile, name))""",
    """CREATE TABLE runs (hash VARCHAR(32) NOT NULL PRIMARY KEY, config_json TEXT NOT NULL,
       status VARCHAR(20) NOT NULL, worker VARCHAR(200), lease_expires FLOAT, attempts INTEGER NOT NULL,
       error TEXT, created_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT, wall_time_s FLOAT,
       device VARCHAR(100), params INTEGER, checkpoint_path TEXT, mlflow_run_id VARCHAR(64),
       epochs_done INTEGER NOT NULL, step INTEGER NOT NULL, final_grader FLOAT, final_iou FLOAT,
       final_si_logrmse FLOAT, best_grader FLOAT, best_iou FLOAT, best_si_logrmse FLOAT, best_epoch INTEGER)""",
    """CREATE TABLE trials (id {serial}, study_id INTEGER NOT NULL REFERENCES studies (id),
       variant VARCHAR(300) NOT NULL, seed INTEGER NOT NULL, run_hash VARCHAR(32) REFERENCES runs (hash),
       overrides_json TEXT, optuna_trial INTEGER, optuna_study VARCHAR(300), created_at FLOAT NOT NULL,
       CONSTRAINT uq_trial_cell UNIQUE (study_id, variant, seed))""",
    """CREATE TABLE epoch_metrics (run_hash VARCHAR(32) NOT NULL REFERENCES runs (hash), epoch INTEGER NOT NULL,
       step INTEGER NOT NULL, wall_time_s FLOAT NOT NULL, iou FLOAT, si_logrmse FLOAT, grader FLOAT,
       loss FLOAT, loss_semseg FLOAT, loss_depth FLOAT, lr FLOAT, iou_per_class_json TEXT,
       PRIMARY KEY (run_hash, epoch))""",
    """CREATE TABLE step_losses (run_hash VARCHAR(32) NOT NULL REFERENCES runs (hash), step INTEGER NOT NULL,
       wall_time_s FLOAT NOT NULL, loss FLOAT, loss_semseg FLOAT, loss_depth FLOAT,
       PRIMARY KEY (run_hash, step))""",
    """INSERT INTO studies (id, plan, profile, name, position, kind, base_json, created_at)
       VALUES (1, 'p', 'default', 's', 0, 'grid', '{{}}', 1.0)""",
    """INSERT INTO runs (hash, config_json, status, attempts, created_at, epochs_done, step, final_grader,
       final_iou, final_si_logrmse, best_grader, best_epoch)
       VALUES ('h1', '{{"lr": 0.1}}', 'done', 1, 1.0, 1, 2, 12.5, 40.0, 27.5, 12.5, 1)""",
    """INSERT INTO trials (id, study_id, variant, seed, run_hash, created_at) VALUES (1, 1, 'a', 0, 'h1', 1.0)""",
    """INSERT INTO epoch_metrics (run_hash, epoch, step, wall_time_s, grader, iou, si_logrmse)
       VALUES ('h1', 1, 2, 0.5, 12.5, 40.0, 27.5)""",
    """INSERT INTO step_losses (run_hash, step, wall_time_s, loss) VALUES ('h1', 2, 0.5, 1.25)""",
]


def _raw(url: str, statements: list[str]) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # as the first release set it
        for statement in statements:
            conn.exec_driver_sql(statement.format(serial="INTEGER NOT NULL PRIMARY KEY" if sqlite
                                                  else "SERIAL PRIMARY KEY"))
    engine.dispose()


def _snapshot(url: str) -> dict:
    """Every table of the database with all its rows: what 'nothing written' is checked against."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        found = {t: sorted(map(tuple, conn.exec_driver_sql(f"SELECT * FROM {t}").all()), key=repr) for t in tables}
    engine.dispose()
    return found


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    from runner.store import sqlite_path

    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


@pytest.mark.parametrize("read_only", [False, True], ids=["run", "read"])
def test_a_database_of_the_first_release_is_refused_in_one_line_and_left_as_it_is(store_url, read_only):
    from ablations.errors import InputError

    _raw(store_url, SCHEMA_1)
    before = _snapshot(store_url)
    assert before["runs"] and before["epoch_metrics"]
    with pytest.raises(InputError) as refused:
        ResultStore(store_url, read_only=read_only)
    message = str(refused.value)
    assert "\n" not in message and refused.value.exit_code == 2
    assert message.startswith(f"{_where(store_url)}: result database of an earlier ablate (schema 1: ")
    assert "ablate 0.1 still reads" in message
    assert ("move the workspace aside" in message) == store_url.startswith("sqlite")
    assert _snapshot(store_url) == before  # nothing written: no table added, no row changed


def test_a_database_of_a_newer_ablate_is_refused_in_one_line_and_left_as_it_is(store, store_url):
    from ablations.errors import InputError

    add(store, study(store))
    store.close()
    _raw(store_url, ["UPDATE ablate_meta SET value = '3' WHERE key = 'schema_version'"])
    before = _snapshot(store_url)
    for read_only in (False, True):
        with pytest.raises(InputError) as refused:
            ResultStore(store_url, read_only=read_only)
        assert str(refused.value) == (f"{_where(store_url)}: result database written by a newer ablate "
                                      "(schema 3; this one reads schema 2); upgrade ablate to use it")
    assert _snapshot(store_url) == before


def test_another_programs_tables_named_like_ours_are_refused(store_url):
    """A database holding e.g. MLflow's ``runs`` (no ``ablate_meta``) is not ablate's to fill."""
    from ablations.errors import InputError

    _raw(store_url, ["CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name TEXT)"])
    before = _snapshot(store_url)
    with pytest.raises(InputError, match=r"not ablate's result database: it has tables named like ablate's \(runs\)"):
        ResultStore(store_url)
    assert _snapshot(store_url) == before


def test_a_result_database_damaged_on_disk_is_named_and_left_alone(tmp_path):
    """SQLite finds the file malformed while reading (its header and schema page are intact):
    bad input naming the file, not a traceback; the file is not written."""
    import hashlib

    from ablations.errors import InputError

    db = tmp_path / "ablate.db"
    store = ResultStore(sqlite_url(db))
    sid = study(store)
    store.add_trials(sid, _cells(2000))
    store.close()
    with open(db, "r+b") as handle:  # overwrite pages past the schema with garbage
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 4096 * 8)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(InputError, match=rf"^{re.escape(str(db))}: cannot be used as ablate's result database: "):
        reader = ResultStore(sqlite_url(db), read_only=True)
        reader.study_cells(sid)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_stores_opened_at_once_on_a_new_database_create_one_schema(store_url):
    """Workers starting together on a new database: one creates the tables, the others wait for
    it (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock, else its catalog's unique keys
    fail the CREATEs that lose the race) and find schema 2 there."""
    from sqlalchemy import text

    errors, barrier = [], threading.Barrier(6)

    def open_store():
        barrier.wait()
        try:
            ResultStore(store_url).close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = ResultStore(store_url)
    try:
        assert store._read(lambda c: c.execute(text("SELECT key, value FROM ablate_meta")).all()) == [
            ("schema_version", "2")]
    finally:
        store.close()

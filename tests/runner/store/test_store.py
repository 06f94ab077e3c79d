"""ResultStore conformance suite: claims, leases, heartbeats, idempotent metric writes, resets.

Every test that takes ``store`` or ``store_url`` runs on both backends: SQLite (the workspace
default) and PostgreSQL (the many-machines store, a throwaway cluster from ``pg_cluster.py``,
skipped with the reason where it cannot run), so a behaviour cannot hold on one and drift on
the other."""
from __future__ import annotations

import threading
import time

import pytest

from store_rows import add, epoch_row, study

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
    from sqlalchemy import inspect

    assert {"studies", "runs", "trials", "epoch_metrics", "step_losses"} <= set(
        inspect(store.engine).get_table_names())
    add(store, study(store))
    again = ResultStore(store_url)  # a second store on existing tables: creation is a no-op
    try:
        assert again.run("h1")["status"] == "pending"
    finally:
        again.close()


def _epochs(store, run_hash):
    from sqlalchemy import select

    from runner.store import epoch_metrics
    return store._read(lambda c: c.execute(select(epoch_metrics).where(
        epoch_metrics.c.run_hash == run_hash).order_by(epoch_metrics.c.epoch)).all())


def _steps(store, run_hash):
    from sqlalchemy import select

    from runner.store import step_losses
    return [r.step for r in store._read(lambda c: c.execute(select(step_losses).where(
        step_losses.c.run_hash == run_hash).order_by(step_losses.c.step)).all())]


def test_ensure_study_and_add_trial_are_idempotent(store):
    sid = study(store)
    assert study(store) == sid
    assert add(store, sid) is True
    assert add(store, sid) is False  # same cell
    assert len(store.study_trials(sid)) == 1
    assert store.run("h1")["status"] == "pending"


def test_claim_is_atomic_second_claim_returns_none(store):
    sid = study(store)
    add(store, sid)
    first = store.claim_run("h1", "w1", lease_s=60)
    assert first is not None and first.attempts == 1 and not first.resumed
    assert store.claim_run("h1", "w2", lease_s=60) is None
    run = store.run("h1")
    assert run["status"] == "running" and run["worker"] == "w1" and run["attempts"] == 1


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
    assert setup.run("h1")["attempts"] == 1


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
    assert store.run("h1")["worker"] == "w2"
    # the first worker's heartbeat and finish now fail: the run is not its own any more
    assert store.heartbeat("h1", "w1", 60) is False
    assert store.finish_run("h1", "w1", "done") is False
    assert store.finish_run("h1", "w2", "done", final_grader=1.0) is True


def test_heartbeat_by_owner_renews_and_by_non_owner_returns_false(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=1)
    before = store.run("h1")["lease_expires"]
    assert store.heartbeat("h1", "w1", 100, epochs_done=3, step=7) is True
    run = store.run("h1")
    assert run["lease_expires"] > before + 50 and run["epochs_done"] == 3 and run["step"] == 7
    assert store.heartbeat("h1", "intruder", 100) is False
    assert store.run("h1")["worker"] == "w1"


def test_finished_runs_are_not_claimable(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=60)
    store.finish_run("h1", "w1", "done", final_grader=2.0)
    assert store.claimable_runs([sid]) == []
    assert store.claim_run("h1", "w2", lease_s=60) is None
    assert store.run("h1")["lease_expires"] is None


def test_interrupted_run_is_claimable_again(store):
    sid = study(store)
    add(store, sid)
    store.claim_run("h1", "w1", lease_s=60)
    store.finish_run("h1", "w1", "interrupted", error="interrupted (SIGINT)")
    assert store.claimable_runs([sid]) == ["h1"]
    again = store.claim_run("h1", "w2", lease_s=60)
    assert again.attempts == 2 and again.resumed and store.run("h1")["error"] is None


def test_record_epoch_is_idempotent(store):
    sid = study(store)
    add(store, sid)
    store.record_epoch("h1", epoch_row(1, grader=1.0))
    store.record_epoch("h1", epoch_row(1, grader=5.0))  # a replayed epoch overwrites
    store.record_epoch("h1", epoch_row(2, grader=6.0))
    rows = _epochs(store, "h1")
    assert [(r.epoch, r.grader) for r in rows] == [(1, 5.0), (2, 6.0)]


def test_record_steps_replaces_replayed_steps(store):
    sid = study(store)
    add(store, sid)
    rows = [{"step": s, "wall_time_s": 0.1 * s, "loss": 1.0, "loss_semseg": 0.5, "loss_depth": 0.5}
            for s in (1, 2, 3)]
    store.record_steps("h1", rows)
    store.record_steps("h1", rows[1:])
    store.record_steps("h1", [])
    assert _steps(store, "h1") == [1, 2, 3]


def test_truncate_history_drops_rows_after_the_checkpoint(store):
    sid = study(store)
    add(store, sid)
    for e in (1, 2, 3):
        store.record_epoch("h1", epoch_row(e))
    store.record_steps("h1", [{"step": s, "wall_time_s": 0.0, "loss": 1.0, "loss_semseg": 0.5,
                               "loss_depth": 0.5} for s in range(1, 7)])
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
    assert store.run("fa")["status"] == "pending" and store.run("fa")["error"] is None
    assert store.run("ok")["status"] == "done"
    assert store.run("fb")["status"] == "failed"
    assert store.claimable_runs([s1, s2]) == ["fa"]
    assert store.claim_run("fb", "w", 60) is None  # failed stays failed until reset_failed


def test_trials_of_run_lists_every_cell_sharing_the_run(store):
    s1, s2 = study(store, "one", 0), study(store, "two", 1)
    add(store, s1, "winner", run_hash="shared")
    add(store, s2, "same_again", run_hash="shared")
    add(store, s2, "other", run_hash="other", lr=0.5)
    cells = store.trials_of_run("shared")
    assert [(c["study"], c["variant"]) for c in cells] == [("one", "winner"), ("two", "same_again")]
    assert {c["plan"] for c in cells} == {"p"}
    assert store.claimable_runs([s1, s2]) == ["shared", "other"]  # a shared run is listed once


def test_search_cells_are_claimed_once_and_released(store):
    sid = store.ensure_study(plan="p", profile="default", name="search", position=0, kind="search",
                             start_from=None, pin=None, pin_reason=None, base_config={})
    for k in range(2):
        store.add_trial(sid, f"search-{k:03d}", 0, config=None, config_hash=None)
    a = store.claim_search_cell(sid, "w1")
    b = store.claim_search_cell(sid, "w2")
    assert a["id"] != b["id"] and store.claim_search_cell(sid, "w3") is None
    store.release_search_cell(a["id"])
    assert store.claim_search_cell(sid, "w3")["id"] == a["id"]
    store.bind_search_cell(b["id"], "p.default.search.base1", 0, {"lr": 0.1}, "hb", {"lr": 0.1})
    assert store.run("hb")["status"] == "pending"
    assert store.trials_of_run("hb")[0]["optuna_trial"] == 0
    assert store.trials_of_run("hb")[0]["optuna_study"] == "p.default.search.base1"


def test_search_cells_of_an_old_base_are_put_back_unsampled(store):
    sid = store.ensure_study(plan="p", profile="default", name="search", position=0, kind="search",
                             start_from=None, pin=None, pin_reason=None, base_config={})
    for k in range(3):
        store.add_trial(sid, f"search-{k:03d}", 0, config=None, config_hash=None)
    old, new, claimed = (store.claim_search_cell(sid, "w") for _ in range(3))
    store.bind_search_cell(old["id"], "s.old", 0, {"lr": 0.1}, "h_old", {"lr": 0.1})
    store.bind_search_cell(new["id"], "s.new", 0, {"lr": 0.2}, "h_new", {"lr": 0.2})
    # `claimed` is being asked (optuna_trial -1, no study yet): not touched

    (stale,) = store.unbind_search_cells(sid, keep_optuna_study="s.new")
    assert (stale["id"], stale["optuna_study"], stale["optuna_trial"]) == (old["id"], "s.old", 0)
    cells = {c["id"]: c for c in store.study_trials(sid)}
    assert cells[old["id"]]["run_hash"] is None and cells[old["id"]]["optuna_trial"] is None
    assert cells[new["id"]]["run_hash"] == "h_new"
    assert cells[claimed["id"]]["optuna_trial"] == -1
    assert store.run("h_old") is not None  # the run stays, keyed by its hash
    assert store.claim_search_cell(sid, "w2")["id"] == old["id"]  # sampled again
    assert store.unbind_search_cells(sid, keep_optuna_study="s.new") == []


def test_edited_cell_points_at_the_new_config_and_keeps_the_old_run(store):
    study_id = study(store)
    assert add(store, study_id, run_hash="old", lr=0.1)
    assert not add(store, study_id, run_hash="new", lr=0.2)  # same cell, config edited
    (cell,) = store.study_trials(study_id)
    assert cell["run_hash"] == "new"
    assert store.run("old") is not None  # reused if the old config comes back


def test_study_row_follows_the_study_file(store):
    first = store.ensure_study(plan="p", profile="x", name="s", position=0, kind="grid", start_from=None,
                               pin=None, pin_reason=None, base_config={"lr": 0.1})
    again = store.ensure_study(plan="p", profile="x", name="s", position=3, kind="variants", start_from="a",
                               pin={"lr": 1}, pin_reason="why", base_config={"lr": 0.2})
    row = store.find_study("p", "x", "s")
    assert first == again and row["position"] == 3 and row["pin_reason"] == "why"
    assert row["base_json"] == '{"lr": 0.2}'


def test_optuna_storage_must_not_be_the_result_store(tmp_path):
    from ablations.errors import InputError
    from runner.orchestrate.session import Session

    studies = tmp_path / "s.yaml"
    studies.write_text("name: t\nstudies:\n  - {name: a, start_from: none, grid: {lr: [0.1]}}\n")
    url = sqlite_url(tmp_path / "same.db")
    with pytest.raises(InputError, match="database of its own"):
        Session.open(studies, workspace=tmp_path / "ws", db_url=url, optuna_storage=url)


def test_a_database_of_an_earlier_version_gains_the_new_columns_and_keeps_its_rows(store, store_url):
    """``trials.optuna_study`` came after the first version: opening an older database adds it."""
    sid = study(store)
    add(store, sid)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE trials DROP COLUMN optuna_study")
    store.close()

    reopened = ResultStore(store_url)
    try:
        (cell,) = reopened.study_trials(sid)
        assert cell["optuna_study"] is None and cell["run_hash"] == "h1"  # the stored row is kept
        reopened.bind_search_cell(cell["id"], "p.default.s.tag", 0, {"lr": 0.2}, "h2", {"lr": 0.2})
        assert reopened.trials_of_run("h2")[0]["optuna_study"] == "p.default.s.tag"
    finally:
        reopened.close()


def _cells(n, prefix="v", lr=0.1):
    from runner.store import Cell

    return [Cell(f"{prefix}{i}", 0, {"lr": lr, "i": i}, f"{prefix}-h{i}-{lr}", {"i": i}) for i in range(n)]


def test_add_trials_writes_every_cell_and_run_once_in_one_transaction(store):
    from sqlalchemy import event

    sid = study(store)
    begins = []
    event.listen(store.engine, "begin", lambda conn: begins.append(1))
    cells = _cells(1200)  # more than one IN list (500) of known runs
    assert store.add_trials(sid, cells) == 1200
    assert len(begins) == 1
    assert store.add_trials(sid, cells) == 0  # idempotent
    stored = store.study_trials(sid)
    assert [(r["variant"], r["run_hash"], r["status"]) for r in stored] == [
        (c.variant, c.config_hash, "pending") for c in cells]
    assert store.runs_by_hash([c.config_hash for c in cells]).keys() == {c.config_hash for c in cells}


def test_add_trials_points_changed_cells_at_their_new_run_and_shares_runs(store):
    from runner.store import Cell

    sid = study(store)
    store.add_trials(sid, _cells(3))
    edited = _cells(3, lr=0.2)[:2] + _cells(3)[2:]  # two cells changed config, one did not
    edited.append(Cell("same-config", 0, edited[0].config, edited[0].config_hash, {"i": 0}))  # shares a run
    assert store.add_trials(sid, edited) == 1
    assert [r["run_hash"] for r in store.study_trials(sid)] == [c.config_hash for c in edited]
    assert store.run("v-h0-0.1") is not None  # the old run stays, keyed by its hash
    assert store.trials_of_run(edited[0].config_hash)[1]["variant"] == "same-config"
    # search cells have no config yet: written unsampled, never re-pointed by a rewrite
    assert store.add_trials(sid, [Cell("search-000", 0)]) == 1
    assert store.add_trials(sid, [Cell("search-000", 0)]) == 0
    assert store.study_trials(sid)[-1]["run_hash"] is None


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
    assert len(setup.study_trials(sid)) == 200
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
    assert store.find_study("p", "x", "s")["source"] == "/a/studies.yaml"  # nothing written
    assert store.ensure_study(**row, source="/b/studies.yaml", take_over=True) == sid
    assert store.find_study("p", "x", "s")["source"] == "/b/studies.yaml"

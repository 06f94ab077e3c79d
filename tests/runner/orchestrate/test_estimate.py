"""The cost preview's numbers (issue 12): distinct trainings after dedup, finished ones, seconds
left per study, the worst case, and where estimates come from (finished runs of the same model
and input size before this host's calibration).

The shared fake task's ``cost`` hook on ``kit.COST_STUDIES``: configs of one ``step_s`` share a
rate, a trial has ``epochs x steps_per_epoch`` steps. Rates are put into the calibration cache by
hand, so every expected number is exact (no timing)."""
from __future__ import annotations

import pytest

from runner.orchestrate.estimate import Rates, chain_cost, eta_seconds, record_calibration, work_of
from runner.orchestrate.projection import project_chain


@pytest.fixture
def session(tmp_path, kit):
    path = kit.write_study_file(tmp_path, kit.fake_study("costs", kit.COST_STUDIES))
    session = kit.open_session(path, tmp_path / "ws")
    session.workspace.mkdir(parents=True, exist_ok=True)
    return session


def calibrate_by_hand(session, fast: float, slow: float) -> None:
    task = session.task
    keys = {round(t.config.step_s, 3): work_of(task, t.config).key
            for s in project_chain(session) for t in s.trials}
    assert record_calibration(session.workspace, {keys[0.0]: fast, keys[0.01]: slow}, "cpu")


def by_name(studies):
    return {s.name: s for s in studies}


def test_distinct_trainings_seconds_and_worst_case(session):
    calibrate_by_hand(session, fast=1.0, slow=3.0)  # 6 steps a trial: 6 s and 18 s
    cost = chain_cost(session)
    lr, more = by_name(cost.studies)["lr"], by_name(cost.studies)["more"]
    assert (lr.cells, lr.distinct, lr.finished, lr.seconds, lr.known) == (2, 2, 0, 24.0, True)
    # projected base 'fast': 'same' is lr's fast trial again (trained once), 'wd' is new
    assert (more.cells, more.distinct, more.finished, more.seconds, more.known) == (2, 1, 0, 6.0, False)
    assert (cost.cells, cost.total("distinct"), cost.trainings()) == (4, 3, 3)
    assert cost.sources == {"calibration": 3}
    # worst case: 'slow' wins lr and nothing after it is shared: two trainings of 18 s
    worst = by_name(cost.worst)
    assert (worst["more"].distinct, worst["more"].seconds) == (2, 36.0)
    assert (cost.trainings(worst=True), cost.total("seconds", worst=True)) == (4, 60.0)
    # the ETA with 2 workers: lr's 24 s over 2 workers, but no sooner than its 18 s training; then 6 s
    assert eta_seconds(cost.studies, slots=2) == (18.0 + 6.0, 0)
    assert eta_seconds(cost.studies, slots=1) == (24.0 + 6.0, 0)


def test_finished_runs_are_left_out_and_estimate_their_signature(session, kit):
    calibrate_by_hand(session, fast=100.0, slow=3.0)
    kit.run_fake(session, only=["lr"])
    cost = chain_cost(session)
    lr, more = by_name(cost.studies)["lr"], by_name(cost.studies)["more"]
    assert (lr.distinct, lr.finished, lr.remaining) == (2, 2, [])
    assert more.known  # lr's real winner is known: no worst case to add
    assert by_name(cost.worst)["more"].remaining == more.remaining
    # the finished fast run's seconds per step beat the calibration for its signature
    fast = next(r for r in session.store.done_runs(session.task.name) if r.config["step_s"] == 0.0)
    assert (more.distinct, more.finished, cost.sources) == (1, 0, {"runs": 1})
    assert more.remaining == [pytest.approx(fast.wall_time_s / fast.step * 6)]
    assert Rates.load(session).source(session.task.Config(lr=0.5)) == "runs"


def test_a_config_without_any_estimate_is_unknown_not_zero(session):
    cost = chain_cost(session)
    assert cost.sources == {"none": 3}
    assert all(s.seconds == 0 and s.unknown == len(s.remaining) for s in cost.studies)
    assert eta_seconds(cost.studies, slots=1) == (0.0, 3)

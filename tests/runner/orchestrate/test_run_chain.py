"""`ablate run` end to end: the chain, MLflow and Optuna read back with their plain clients,
winner inheritance and pins, seeds, dedup, resume, concurrent workers.

The ``real_chain`` fixture trains the 3-study chain of ``CHAIN_STUDIES`` (conftest) with the
built-in task ``mtl`` for real (6 tiny runs), once per module, through the ``ablate`` CLI: the
first ``ablate run`` gets a real SIGINT after the first epoch of the 2-epoch trial (Ctrl-C: the
stop flag is set, the loop checkpoints and the trial is handed back ``interrupted``), the second
resumes and finishes it, the third must train nothing. Tests that need many trials use the shared
fake task (``tests/support/fake_task.py``) trained by an in-process worker (``kit.run_fake``).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest


EXPERIMENT = "tiny-default"  # <study file name>-<profile>; the tiny file has no profiles


def _mlflow(ws: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{ws}/mlflow.db")


def _all_mlflow_runs(ws: Path):
    client = _mlflow(ws)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _stored_runs(session) -> dict:
    """Every run in the result store (its ``runs`` table, read as a user would with sqlite3),
    as the store's typed records."""
    with sqlite3.connect(session.workspace / "ablate.db") as conn:
        hashes = [h for (h,) in conn.execute("SELECT hash FROM runs")]
    runs = session.store.runs(hashes)
    assert sorted(runs) == sorted(hashes)
    return runs


def _cells(session, study: str):
    found = session.store.find_study(session.plan.name, session.profile, study)
    return session.store.study_cells(found.id)


def _states(session) -> dict:
    from runner.orchestrate.walk import materialize, studies_in_scope

    return {s.name: s for s in materialize(session, studies_in_scope(session, None))}


def _expected_winner(cells) -> str:
    """The winner rule restated: highest mean grader, ties by mean (IoU - SI-logRMSE)."""
    by_variant: dict[str, list] = {}
    for c in cells:
        by_variant.setdefault(c.variant, []).append(c.metrics)

    def key(rows):
        n = len(rows)
        return (sum(r["grader"] for r in rows) / n, sum(r["iou"] - r["si_logrmse"] for r in rows) / n)
    return max(by_variant, key=lambda v: key(by_variant[v]))


# --------------------------------------------------------------------------- the real chain
@pytest.fixture(scope="module")
def real_chain(tmp_path_factory, kit):
    """Train the tiny chain for real: interrupted run, resumed run, no-op run. Returns facts."""
    import runner.tasks.mtl.train as train_module
    from runner.orchestrate.context import read_checkpoint

    root = tmp_path_factory.mktemp("chain")
    study_file = kit.write_study_file(root, kit.CHAIN_STUDIES)
    ws = root / "ws"
    real_train = train_module.train
    pressed: list[int] = []

    def train_interrupted_once(config, train_split, val_split, *, hooks, **kw):
        """The real loop; Ctrl-C (a real SIGINT to this process, whose handler ``ablate run``
        installed) once the first attempt of the 2-epoch trial has recorded its first epoch."""
        if config.epochs == 2 and not pressed:
            on_epoch = hooks.on_epoch

            def on_epoch_then_ctrl_c(row):
                on_epoch(row)
                if not pressed:
                    pressed.append(row["epoch"])
                    os.kill(os.getpid(), signal.SIGINT)
            hooks.on_epoch = on_epoch_then_ctrl_c
        return real_train(config, train_split, val_split, hooks=hooks, **kw)

    facts: dict = {"file": study_file, "ws": ws}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "train", train_interrupted_once)
        code, out, _ = kit.invoke_cli("run", study_file, "--workspace", ws, "--no-progress")
    assert pressed == [1]
    facts["first_code"], facts["first_out"] = code, out
    session = kit.open_session(study_file, ws)
    (cell,) = _cells(session, "longer")
    h = cell.run_hash
    facts["interrupted_hash"] = h
    facts["after_first"] = session.store.run(h)
    facts["steps_after_first"] = session.store.steps(h)
    facts["checkpoint_after_first"] = read_checkpoint(session.run_dir(h)).position

    code, out, _ = kit.invoke_cli("run", study_file, "--workspace", ws, "--no-progress")
    facts["second_code"], facts["second_out"] = code, out
    facts["runs_after_second"] = _stored_runs(session)
    facts["mlflow_after_second"] = len(_all_mlflow_runs(ws))

    import runner.orchestrate.scheduler as scheduler_module

    slots_asked: list = []  # the third run must answer from the store without planning any worker

    def record_worker_slots(*args, **kwargs):
        slots_asked.append(args)
        return real_worker_slots(*args, **kwargs)

    real_worker_slots = scheduler_module.worker_slots
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler_module, "worker_slots", record_worker_slots)
        code, out, _ = kit.invoke_cli("run", study_file, "--workspace", ws, "--no-progress")
    facts["third_slots_asked"] = slots_asked
    facts["third_code"] = code
    facts["session"] = session
    return facts


def test_interrupted_run_exits_130_and_resumes_to_one_finished_mlflow_run(real_chain):
    first = real_chain["after_first"]
    assert real_chain["first_code"] == 130
    assert first.status == "interrupted" and first.attempts == 1
    h = real_chain["interrupted_hash"]
    position = real_chain["checkpoint_after_first"]
    assert (position.epoch, position.step) == (1, 2)  # epoch 1 done, 2 steps
    assert (first.epochs_done, first.step) == (1, 2)  # the store says where the checkpoint is
    assert real_chain["second_code"] == 0
    final = real_chain["runs_after_second"][h]
    assert final.status == "done" and final.attempts == 2
    assert final.tracking_run_id == first.tracking_run_id  # same MLflow run, reopened
    ws = real_chain["ws"]
    # done: its final weights only (checkpoints: keep final, the default), no optimizer state
    assert (ws / "runs" / h / "weights.pt").is_file() and not (ws / "runs" / h / "checkpoint.pt").exists()
    run = _mlflow(ws).get_run(final.tracking_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["config_hash"] == h
    history = _mlflow(ws).get_metric_history(final.tracking_run_id, "grader")
    assert sorted(m.step for m in history) == sorted({m.step for m in history})  # one point per epoch
    assert len(history) == 2
    # the result DB holds both epochs once each, the last one equal to the final grader
    session = real_chain["session"]
    epochs = session.store.epochs([h])
    assert [e.epoch for e in epochs] == [1, 2] and epochs[-1].metrics["grader"] == final.metrics["grader"]
    # the steps before the interruption are kept as they were; the resume added the rest once
    before, after = real_chain["steps_after_first"], session.store.steps(h)
    assert [s.step for s in before] == [1, 2] and [s.step for s in after] == [1, 2, 3, 4]
    assert after[:2] == before


def test_second_run_trains_nothing_and_starts_no_worker(real_chain):
    session = real_chain["session"]
    after = _stored_runs(session)
    before = real_chain["runs_after_second"]
    assert {h: r.attempts for h, r in after.items()} == {h: r.attempts for h, r in before.items()}
    assert len(_all_mlflow_runs(real_chain["ws"])) == real_chain["mlflow_after_second"]
    assert real_chain["third_code"] == 0
    assert real_chain["third_slots_asked"] == []  # answered from the store: no worker planned or started


def test_mlflow_one_run_per_trained_config_with_params_tags_metrics_artifacts(real_chain):
    from runner.tasks.mtl.data.miniscapes import CLASS_NAMES

    ws, session = real_chain["ws"], real_chain["session"]
    client = _mlflow(ws)
    assert [e.name for e in client.search_experiments() if e.name != "Default"] == [EXPERIMENT]
    runs = _all_mlflow_runs(ws)
    table = _stored_runs(session)
    assert len(runs) == len(table) == 6  # 7 trials, 6 distinct configs (dedup)
    by_id = {r.tracking_run_id: r for r in table.values()}
    assert set(by_id) == {r.info.run_id for r in runs}
    for run in runs:
        row = by_id[run.info.run_id]
        config = row.config
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in config.items()}  # flat resolved config
        tags = run.data.tags
        cell = session.store.cells_of_run(row.hash)[0]
        assert (tags["study"], tags["variant"], tags["seed"], tags["config_hash"], tags["trial_id"]) == (
            cell.study, cell.variant, str(cell.seed), row.hash, str(cell.cell_id))
        assert tags["task"] == "mtl"
        metrics = run.data.metrics
        per_epoch = ("iou", "si_logrmse", "grader", "grader_unclamped", "epoch_loss", "epoch_loss_semseg",
                     "epoch_loss_depth", "lr", "epoch", *(f"iou_{n.replace(' ', '_')}" for n in CLASS_NAMES))
        for key in per_epoch:
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [2 * e for e in range(1, config["epochs"] + 1)], key
        for key in ("loss", "loss_semseg", "loss_depth"):  # per step, one point per step
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, 2 * config["epochs"] + 1)), key
        assert metrics["grader"] == pytest.approx(row.metrics["grader"])
        assert metrics["iou"] == pytest.approx(row.metrics["iou"])
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in top and "samples" in top
        samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert samples and all(p.endswith(".png") for p in samples)


def test_winner_inheritance_pin_and_seeds(real_chain):
    session = real_chain["session"]
    store = session.store
    lr_cells, weighting, longer = (_cells(session, s) for s in ("lr", "weighting", "longer"))
    # lr: 2 variants, 1 seed; weighting: 2 variants x seeds 2 (winner by mean); longer: 1
    assert [(c.variant, c.seed) for c in weighting] == [("w55", 0), ("w55", 1), ("w64", 0), ("w64", 1)]
    assert all(c.status == "done" for c in lr_cells + weighting + longer)
    states = _states(session)
    for name, cells in (("lr", lr_cells), ("weighting", weighting)):
        assert states[name].winner.variant == _expected_winner(cells)
    # each later study's base is exactly the winner's resolved config
    lr_winner = next(c for c in lr_cells if c.variant == states["lr"].winner.variant).config
    w_winner = next(c for c in weighting if c.variant == states["weighting"].winner.variant and c.seed == 0).config
    assert store.find_study("tiny", "default", "weighting").base_config == lr_winner
    longer_row = store.find_study("tiny", "default", "longer")
    assert longer_row.base_config == w_winner
    # the pin sets epochs: 2 over that base, with its reason kept and shown
    assert longer_row.pin == {"epochs": 2}
    assert longer[0].config == {**w_winner, "epochs": 2, "head": "plain"}
    assert "two epochs: the tiny test wants a resumable trial" in longer_row.pin_reason
    assert "two epochs: the tiny test wants" in real_chain["second_out"]  # status after the run


def test_dedup_identical_config_trained_once_and_shared(real_chain):
    session = real_chain["session"]
    lr_cells, weighting = _cells(session, "lr"), _cells(session, "weighting")
    winner = next(c for c in lr_cells if c.variant == _expected_winner(lr_cells))
    w55_seed0 = next(c for c in weighting if (c.variant, c.seed) == ("w55", 0))
    assert w55_seed0.run_hash == winner.run_hash
    cells = session.store.cells_of_run(winner.run_hash)
    assert [(c.study, c.variant) for c in cells] == [("lr", winner.variant), ("weighting", "w55")]
    assert session.store.run(winner.run_hash).attempts == 1


def test_workspace_layout(real_chain):
    ws = real_chain["ws"]
    for name in ("ablate.db", "mlflow.db", "mlartifacts", "runs", "data", "cache"):
        assert (ws / name).exists(), name
    assert not (ws / "optuna.db").exists()  # no search study in this file
    hashes = set(_stored_runs(real_chain["session"]))
    assert {p.name for p in (ws / "runs").iterdir()} == hashes
    assert all((ws / "runs" / h / "weights.pt").is_file() for h in hashes)  # all done: final weights


def test_status_and_results_on_the_trained_chain(real_chain, cli):
    import io

    import pandas as pd

    f, ws = real_chain["file"], real_chain["ws"]
    code, out, _ = cli("status", f, "--workspace", ws)
    assert code == 0
    for word in ("done", "running", "failed", "pending", "winner", "lr", "weighting", "longer"):
        assert word in out
    code, out, _ = cli("results", f, "--workspace", ws, "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert code == 0 and len(frame) == 7 and set(frame["status"]) == {"done"}
    assert frame["winner"].sum() == 1 + 2 + 1  # lr winner, both seeds of the weighting winner, longer
    code, out, _ = cli("results", f, "--workspace", ws, "--format", "json")
    records = pd.read_json(io.StringIO(out), orient="records")
    assert len(records) == 7 and records["grader"].notna().all()


def test_report_command_on_the_trained_chain_writes_only_inside_the_workspace(real_chain, cli, tmp_path,
                                                                              monkeypatch):
    """``ablate report``: the markdown with a section per study, logged to MLflow as the
    experiment's "report" run whose artifacts live in the workspace; nothing appears in the
    current directory."""
    f, ws = real_chain["file"], real_chain["ws"]
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("report", f, "--workspace", ws)
    assert code == 0
    report = ws / "report" / "report.md"
    assert out.strip().endswith(str(report))
    text = report.read_text()
    for study in ("lr", "weighting", "longer"):
        assert any(line.startswith("## ") and study in line for line in text.splitlines()), study
    assert list(tmp_path.iterdir()) == []
    client = _mlflow(ws)
    experiment = client.get_experiment_by_name(real_chain["session"].experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'report'")
    assert run.info.artifact_uri.startswith((ws / "mlartifacts").as_uri())
    assert "report.md" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_report_before_any_run_keeps_its_mlflow_artifacts_in_the_workspace(tmp_path, cli, kit, monkeypatch):
    """On a workspace no ``ablate run`` has touched, ``ablate report`` writes the report and creates
    no database (nothing ran: no MLflow store to log to). Where the MLflow store exists but not the
    study file's experiment, the report creates the experiment itself: with the workspace's
    artifact location (without it, MLflow's default put an ``mlruns/`` folder into the current
    directory)."""
    study_file = kit.write_study_file(tmp_path, kit.CHAIN_STUDIES)
    ws, cwd = tmp_path / "ws", tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, out, _ = cli("report", study_file, "--workspace", ws)
    assert code == 0 and (ws / "report" / "report.md").is_file()
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in ws.iterdir()) == ["report"]

    client = _mlflow(ws)
    client.search_experiments()  # the MLflow store now exists (as after a run of another profile)
    code, out, _ = cli("report", study_file, "--workspace", ws)
    assert code == 0 and list(cwd.iterdir()) == []
    (run,) = client.search_runs([client.get_experiment_by_name(
        kit.open_session(study_file, ws).experiment).experiment_id], "tags.`ablate.kind` = 'report'")
    assert run.info.artifact_uri.startswith((ws / "mlartifacts").as_uri())


def test_failed_trial_exits_1_and_status_names_the_reason(tmp_path, cli, monkeypatch, kit):
    """A trial that fails (here: every one) is stored as failed with its reason: exit code 1;
    the study has no winner and the studies after it are blocked, not run."""
    import runner.tasks.mtl.train as train_module

    def broken_train(config, *args, **kwargs):
        raise RuntimeError(f"boom at lr={config.lr}")

    monkeypatch.setattr(train_module, "train", broken_train)
    study_file = kit.write_study_file(tmp_path, kit.CHAIN_STUDIES)
    code, out, _ = cli("run", study_file, "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 1
    code, out, _ = cli("status", study_file, "--workspace", tmp_path / "ws")
    flat = " ".join(out.split())
    assert code == 0
    assert "│ lr │ 0 │ 0 │ 2 │" in flat and "no winner (all failed)" in flat
    assert "failed lr / lr=0.001 / seed 0: RuntimeError: boom at lr=0.001" in flat
    assert "waiting for lr (blocked: lr has no winner)" in flat
    assert "waiting for weighting (blocked: lr has no winner)" in flat


def test_missing_data_set_is_bad_input_exit_2(tmp_path, cli, kit):
    """A data_root that does not exist is the user's input, not a failed trial: exit 2, the run
    is handed back (interrupted), and a later run with the data in place resumes it."""
    missing = tmp_path / "no-such-dir"
    study_file = kit.write_study_file(tmp_path, kit.CHAIN_STUDIES.replace("data_root: synthetic", f"data_root: {missing}"))
    code, out, err = cli("run", study_file, "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2
    session = kit.open_session(study_file, tmp_path / "ws")
    statuses = [c.status for c in _cells(session, "lr")]
    assert "failed" not in statuses and "interrupted" in statuses


def test_winner_ties_are_broken_by_iou_minus_si_logrmse():
    """The mtl task's objective: the grader, ties broken by grader_unclamped (IoU - SI-logRMSE)."""
    from types import SimpleNamespace

    from ablations import load_task, pick_winner, summarise

    def cell(variant, status, grader=None, iou=None, si=None):
        metrics = {} if grader is None else {"grader": grader, "iou": iou, "si_logrmse": si,
                                             "grader_unclamped": iou - si}
        return SimpleNamespace(variant=variant, seed=0, status=status, metrics=metrics, run_hash=variant,
                               overrides=None, config=None, wall_time_s=1.0, params=None)

    objective = load_task("mtl").objective
    cells = [cell("a", "done", 0.0, 30.0, 40.0), cell("b", "done", 0.0, 35.0, 40.0),
             cell("c", "done", 0.0, 45.0, 60.0), cell("d", "failed")]
    assert pick_winner(summarise(cells), objective).variant == "b"
    cells.append(cell("e", "done", 0.1, 10.0, 90.0))
    assert pick_winner(summarise(cells), objective).variant == "e"  # the grader decides first


# --------------------------------------------------------------------------- the fake task
GRID_STUDIES = """\
  - name: lr
    start_from: none
    grid: {lr: [0.001, 0.004, 0.002, 0.003]}
  - name: seeds
    start_from: previous
    seeds: 2
    variants:
      - {name: seg5, set: {weight: 0.5}}
      - {name: seg7, set: {weight: 0.7}}
      - {name: seg3, set: {weight: 0.3}}
  - name: pinned
    start_from: previous
    pin: {set: {lr: 0.0005}, reason: "lower lr for the last study"}
    grid: {epochs: [1, 2]}
"""


def _one_trial_session(tmp_path, kit):
    """A study file with one 3-epoch trial of 2 steps an epoch (a single run's life)."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    text = kit.fake_study("tiny", "  - name: one\n    start_from: none\n    grid: {epochs: [3]}\n",
                          log_dir=log_dir, steps_per_epoch=2)
    return kit.open_session(kit.write_study_file(tmp_path, text), tmp_path / "ws"), log_dir


def test_fake_chain_winners_are_predictable(tmp_path, kit):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    session = kit.open_session(kit.write_study_file(tmp_path, kit.fake_study("fakegrid", GRID_STUDIES,
                                                                             log_dir=log_dir)), tmp_path / "ws")
    summary = kit.run_fake(session)
    assert summary.failed == 0 and not summary.interrupted
    # every cell trained once, except the winner re-appearing in 'seeds' (seg5 seed 0)
    calls = kit.calls(log_dir)
    assert set(calls.values()) == {1}
    assert summary.trained == len(calls) == 4 + (6 - 1) + 2
    states = _states(session)
    assert states["lr"].winner.variant == "lr=0.004"
    assert states["seeds"].winner.variant == "seg7" and states["seeds"].winner.seeds == [0, 1]
    Config, final_score = kit.fake_task.Config, kit.fake_task.final_score
    mean = sum(final_score(Config(lr=0.004, weight=0.7, seed=s)) for s in (0, 1)) / 2
    assert states["seeds"].winner.mean("score") == pytest.approx(mean)
    pinned_base = states["pinned"].base
    assert pinned_base == states["seeds"].winner.config | {"seed": 0}
    assert all(c.config["lr"] == 0.0005 for c in _cells(session, "pinned"))


def test_results_and_status_leave_out_cells_an_edit_removed(tmp_path, kit, capsys):
    """After removing variants from a study, `ablate results` and `ablate status` list only the
    cells the file declares; the removed cells' runs stay in the store for reuse."""
    from runner.views import print_status, results_frame

    # lr=0.003 fails (its cell sets the fake task's fault)
    text = kit.fake_study("fakegrid", GRID_STUDIES.replace(
        "grid: {lr: [0.001, 0.004, 0.002, 0.003]}", "grid: [{lr: [0.001, 0.004, 0.002]}, {lr: [0.003], fault: [error]}]"))
    study_file = kit.write_study_file(tmp_path, text)
    session = kit.open_session(study_file, tmp_path / "ws")
    assert kit.run_fake(session).failed == 1
    print_status(session)
    assert "failed lr / lr=0.003,fault=error / seed 0" in capsys.readouterr().out
    study_file.write_text(text.replace("[{lr: [0.001, 0.004, 0.002]}, {lr: [0.003], fault: [error]}]",
                                       "{lr: [0.001, 0.002]}"))
    session = kit.open_session(study_file, tmp_path / "ws")
    frame = results_frame(session)
    assert sorted(frame[frame["study"] == "lr"]["variant"]) == ["lr=0.001", "lr=0.002"]
    print_status(session)
    assert "lr=0.003" not in capsys.readouterr().out  # its failure belonged to a removed cell
    assert len(_cells(session, "lr")) == 4  # still stored


def test_fake_trial_resumes_with_same_run_and_mlflow_run(tmp_path, kit):
    session, log_dir = _one_trial_session(tmp_path, kit)
    first = kit.run_fake(session, stop=kit.stop_after_checkpoints(log_dir, 1))
    assert first.interrupted
    (run_hash,) = kit.calls(log_dir)
    run = session.store.run(run_hash)
    assert run.status == "interrupted" and run.attempts == 1
    second = kit.run_fake(session)
    assert not second.interrupted
    run2 = session.store.run(run_hash)
    assert run2.status == "done" and run2.attempts == 2
    assert run2.tracking_run_id == run.tracking_run_id
    assert kit.starts(log_dir, run_hash) == [0, 2]  # resumed from the epoch-1 checkpoint (step 2)
    mlrun = _mlflow(session.workspace).get_run(run2.tracking_run_id)
    assert mlrun.info.status == "FINISHED"
    history = _mlflow(session.workspace).get_metric_history(run2.tracking_run_id, "score")
    assert sorted(m.step for m in history) == [2, 4, 6]


def test_second_ctrl_c_inside_a_trial_hands_it_back_and_kills_its_mlflow_run(tmp_path, kit, monkeypatch):
    """The second Ctrl-C raises KeyboardInterrupt wherever the trial is (no checkpoint first):
    the run is handed back ``interrupted`` with the reason, its MLflow run ends KILLED (it stayed
    RUNNING before), the interrupt reaches the CLI, and the next run resumes the same MLflow run."""
    from runner.orchestrate.trial import TrialRecorder

    session, log_dir = _one_trial_session(tmp_path, kit)
    record_epoch = TrialRecorder.record_epoch

    def record_epoch_then_ctrl_c(self, epoch, *args, **kwargs):
        record_epoch(self, epoch, *args, **kwargs)
        if epoch == 2:
            raise KeyboardInterrupt  # what the worker's handler raises on the second SIGINT

    monkeypatch.setattr(TrialRecorder, "record_epoch", record_epoch_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        kit.run_fake(session)
    monkeypatch.undo()
    (run_hash,) = kit.calls(log_dir)
    run = session.store.run(run_hash)
    assert run.status == "interrupted" and run.lease_expires is None
    assert "second Ctrl-C" in run.error
    assert _mlflow(session.workspace).get_run(run.tracking_run_id).info.status == "KILLED"

    assert not kit.run_fake(session).interrupted
    resumed = session.store.run(run_hash)
    assert resumed.status == "done" and resumed.tracking_run_id == run.tracking_run_id
    assert kit.starts(log_dir, run_hash) == [0, 2]  # from the epoch-1 checkpoint: epoch 2 had none
    assert _mlflow(session.workspace).get_run(run.tracking_run_id).info.status == "FINISHED"


def test_second_ctrl_c_during_the_graceful_stop_still_ends_the_mlflow_run(tmp_path, kit, monkeypatch):
    """The first Ctrl-C stops the trial at its checkpoint; the second lands while the graceful
    stop is closing the MLflow run (seen in CI: the run stayed RUNNING). The worker still ends
    it KILLED, and the store has the trial ``interrupted``."""
    from runner.tracking.mlflow_run import MLflowRun

    session, log_dir = _one_trial_session(tmp_path, kit)
    real_finish = MLflowRun.finish
    pressed: list[str] = []

    def finish_cut_short_once(self, status="FINISHED"):
        if status == "KILLED" and not pressed:
            pressed.append(status)
            self._finished = True  # as far as finish() got before the signal
            raise KeyboardInterrupt
        return real_finish(self, status)

    monkeypatch.setattr(MLflowRun, "finish", finish_cut_short_once)
    with pytest.raises(KeyboardInterrupt):  # the graceful stop after epoch 1
        kit.run_fake(session, stop=kit.stop_after_checkpoints(log_dir, 1))
    assert pressed == ["KILLED"]
    (run_hash,) = kit.calls(log_dir)
    run = session.store.run(run_hash)
    assert run.status == "interrupted" and run.lease_expires is None
    assert _mlflow(session.workspace).get_run(run.tracking_run_id).info.status == "KILLED"


def test_two_concurrent_workers_never_train_the_same_cell(tmp_path, kit):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    text = kit.fake_study("tiny", """\
  - name: grid
    start_from: none
    seeds: 2
    grid: {lr: [0.001, 0.002, 0.003], weight: [0.3, 0.5]}
  - name: next
    start_from: previous
    variants:
      - {name: again, set: {}}
      - {name: other, set: {momentum: 0.2}}
""", log_dir=log_dir, step_s=0.01)
    study_file = kit.write_study_file(tmp_path, text)
    kit.open_session(study_file, tmp_path / "ws")  # create the DB before the race
    summaries = {}

    def work(name):
        summaries[name] = kit.run_fake(kit.open_session(study_file, tmp_path / "ws"), worker_id=name)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    calls = kit.calls(log_dir)
    assert len(calls) == 12 + 1 and set(calls.values()) == {1}
    assert sum(s.trained for s in summaries.values()) == 13
    assert all(s.trained > 0 for s in summaries.values()), summaries  # both took part


SEARCH_STUDIES = """\
  - name: lr_search
    start_from: none
    search:
      sampler: tpe
      n_trials: 6
      pruner: median
      space:
        lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
  - name: after
    start_from: previous
    variants:
      - {name: w6, set: {weight: 0.6}}
"""


def test_search_study_optuna_trials_read_back(tmp_path, kit):
    import optuna

    session = kit.open_session(kit.write_study_file(tmp_path, kit.fake_study("tinysearch", SEARCH_STUDIES, epochs=3)),
                               tmp_path / "ws")
    summary = kit.run_fake(session)
    assert summary.failed == 0
    ws = session.workspace
    assert (ws / "optuna.db").is_file()
    cells = _cells(session, "lr_search")
    (study_name,) = {c.optuna_study for c in cells}
    assert study_name.startswith("tinysearch.default.lr_search.")  # + the tag of its base
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{ws}/optuna.db")
    assert len(study.trials) == 6
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert optuna.trial.TrialState.COMPLETE in states
    assert len({t.params["lr"] for t in study.trials}) == 6  # the sampler explores
    assert len(cells) == 6 and all(c.status in ("done", "pruned") for c in cells)
    by_number = {c.optuna_trial: c for c in cells}
    for t in study.trials:
        cell = by_number[t.number]
        assert cell.config["lr"] == pytest.approx(t.params["lr"])
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert cell.status == "done" and t.value == pytest.approx(cell.metrics["score"])
        else:  # pruned before its last epoch: a finished trial is never thrown away
            assert cell.status == "pruned" and max(t.intermediate_values) < 3
    # the next study starts from the best complete trial's config
    states = _states(session)
    best = max((c for c in cells if c.status == "done"), key=lambda c: c.metrics["score"])
    assert states["lr_search"].winner.variant == best.variant
    assert states["after"].base == best.config


def test_search_starts_over_in_a_new_optuna_study_when_its_base_moves(tmp_path, kit):
    """An edit upstream of a search study (here: the defaults) moves its base. Trials sampled on
    the old base say nothing about the new one: every cell is sampled again in a new Optuna
    study, the interrupted trial of the old study is ended FAIL (not left RUNNING), and the next
    study starts from a winner trained on the new base."""
    import optuna

    log_dir = tmp_path / "log"
    log_dir.mkdir()
    text = kit.fake_study("tinysearch", SEARCH_STUDIES, log_dir=log_dir)
    study_file = kit.write_study_file(tmp_path, text)
    session = kit.open_session(study_file, tmp_path / "ws")
    first = kit.run_fake(session, stop=kit.stop_after_checkpoints(log_dir, 1))
    assert first.interrupted
    (old_cell,) = [c for c in _cells(session, "lr_search") if c.run_hash is not None]
    old_name = old_cell.optuna_study
    storage = f"sqlite:///{session.workspace}/optuna.db"
    assert optuna.load_study(study_name=old_name, storage=storage).trials[0].state == optuna.trial.TrialState.RUNNING

    study_file.write_text(text.replace("  steps_per_epoch: 3\n", "  steps_per_epoch: 3\n  weight: 0.7\n"))
    session = kit.open_session(study_file, tmp_path / "ws")
    second = kit.run_fake(session)
    assert second.failed == 0 and not second.interrupted

    cells = _cells(session, "lr_search")
    assert {c.optuna_study for c in cells} != {old_name} and len({c.optuna_study for c in cells}) == 1
    assert all(c.config["weight"] == 0.7 for c in cells)
    assert all(c.status in ("done", "pruned") for c in cells)
    (new_name,) = {c.optuna_study for c in cells}
    assert len(optuna.load_study(study_name=new_name, storage=storage).trials) == 6
    (old_trial,) = optuna.load_study(study_name=old_name, storage=storage).trials
    assert old_trial.state == optuna.trial.TrialState.FAIL
    states = _states(session)
    assert states["after"].base["weight"] == 0.7
    assert session.store.run(old_cell.run_hash) is not None  # the old run stays in the store


def test_a_worker_whose_lease_was_taken_over_stops_and_writes_nothing_more(tmp_path, kit, monkeypatch):
    """Another worker took the run over (this one's lease had expired, e.g. a long stall): the
    heartbeat notices, the worker stops at its next write instead of racing the new owner and
    leaves the store row, the epoch table and the MLflow run (the new owner reopened it and ends
    it) to the new owner: it does not end that run behind the new owner's back."""
    from runner.orchestrate.trial import TrialRecorder

    session, log_dir = _one_trial_session(tmp_path, kit)
    on_step = TrialRecorder.on_step
    noticed: list[bool] = []

    def step_then_takeover(self, step, scalars):
        on_step(self, step, scalars)
        if step == 4:  # the last step of epoch 2 (2 steps per epoch), before its epoch is recorded
            session.store.update_run(self.run_hash, worker="thief", lease_expires=time.time() + 600)
            noticed.append(self.heartbeat.lost.wait(30))  # a few heartbeats (every lease/4 = 0.1 s)

    monkeypatch.setattr(TrialRecorder, "on_step", step_then_takeover)
    summary = kit.run_fake(session, lease_s=0.4)
    assert noticed == [True]
    assert summary.interrupted
    (run_hash,) = kit.calls(log_dir)
    run = session.store.run(run_hash)
    assert run.status == "running" and run.worker == "thief"  # left to the new owner
    assert [e.epoch for e in session.store.epochs([run_hash])] == [1]  # epoch 2 was not written by the worker that lost the lease
    assert _mlflow(session.workspace).get_run(run.tracking_run_id).info.status == "RUNNING"

"""Fault 4: failing trials (non-finite loss, an exception, out of memory).

Each is marked failed with its reason stored and shown by ``ablate status``; the rest of the
study, and the next study of the chain, go on; ``ablate run`` exits 1; a plain rerun leaves
failed trials alone and ``ablate run --retry-failed`` runs them again. The fake trainer raises
the faults; one real training diverges (lr 1e8) through the CLI subprocess.
"""
from __future__ import annotations

import functools

import runner.orchestrate.scheduler
from fault_fakes import FAULT_MESSAGES, FakeTrainer, study_text
from fault_helpers import main_inprocess, mlflow_status, run_cli, runs_by_variant, tiny_study
from runner.orchestrate.worker import WorkerOptions

FAULTS = {0.011: "nan", 0.012: "oom", 0.013: "error"}
REASONS = {"nan": "NonFiniteLossError: non-finite loss", "oom": "out of memory: CUDA out of memory",
           "error": "ValueError: " + FAULT_MESSAGES["error"]}


def test_failed_trials_are_recorded_shown_and_retried(tmp_path, capsys, monkeypatch, restore_signals):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    trainer = FakeTrainer(str(log_dir), step_s=0.001, faults=FAULTS)
    monkeypatch.setattr(runner.orchestrate.scheduler, "WorkerOptions", functools.partial(WorkerOptions, trainer=trainer))
    study = tmp_path / "fail.yaml"
    study.write_text(study_text("fail", [("first", {"lr": [0.011, 0.012, 0.013, 0.02, 0.03], "momentum": [0.9]}),
                                         ("second", {"weight_decay": [1e-5, 2e-5]})], epochs=2, steps=2))
    args = ["run", study, "--workspace", tmp_path / "ws", "--no-progress", "--lease", "5"]

    code, out, err = main_inprocess(args, capsys)
    assert code == 1, out + err
    runs = runs_by_variant(tmp_path / "ws")
    for lr, kind in FAULTS.items():
        row = runs[("first", f"lr={lr},momentum=0.9", 0)]
        assert row["status"] == "failed" and row["error"].startswith(REASONS[kind]), row["error"]
        assert "fault_fakes.py:" in row["error"]  # where it happened
        assert mlflow_status(tmp_path / "ws", row["mlflow_run_id"]) == "FAILED"
    others = [r for k, r in runs.items() if k[0] == "second" or float(k[1].split(",")[0][3:]) not in FAULTS]
    assert len(others) == 4 and {r["status"] for r in others} == {"done"}  # the rest, and the next study, went on

    code, out, _ = main_inprocess(["status", study, "--workspace", tmp_path / "ws"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    for kind in FAULTS.values():
        assert REASONS[kind].split(":")[0] in flat, out
    assert "non-finite loss" in flat and "out of memory" in flat and "exploded on purpose" in flat

    code, out, err = main_inprocess(args, capsys)  # a plain rerun does not retry them
    assert code == 1 and {r["attempts"] for r in runs_by_variant(tmp_path / "ws").values()} == {1}

    (log_dir / "fixed").touch()  # the user fixes the cause
    code, out, err = main_inprocess(args + ["--retry-failed"], capsys)
    assert code == 0, out + err
    after = runs_by_variant(tmp_path / "ws")
    assert {r["status"] for r in after.values()} == {"done"}
    for key, row in after.items():
        failed_before = runs[key]["status"] == "failed"
        assert row["attempts"] == (2 if failed_before else 1), (key, row["attempts"])
        assert row["error"] is None


def test_diverging_real_training_fails_with_reason_and_exit_1(tmp_path):
    study = tmp_path / "nan.yaml"
    study.write_text(tiny_study("nan", "  - name: s1\n    grid: {lr: [100000000.0, 0.01]}\n", epochs=1,
                                steps_per_epoch=3))
    result = run_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    runs = runs_by_variant(tmp_path / "ws")
    diverged, healthy = runs[("s1", "lr=100000000.0", 0)], runs[("s1", "lr=0.01", 0)]
    assert diverged["status"] == "failed" and "non-finite" in diverged["error"], diverged["error"]
    assert healthy["status"] == "done"
    status = run_cli("status", study, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert "non-finite" in " ".join(status.stdout.split())

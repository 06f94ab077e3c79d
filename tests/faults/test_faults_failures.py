"""Fault 4: failing trials (non-finite loss, an exception, out of memory).

Each is marked failed with its reason stored and shown by ``ablate status``; the rest of the
study, and the next study of the chain, go on; ``ablate run`` exits 1; a plain rerun leaves
failed trials alone and ``ablate run --retry-failed`` runs them again. The fake task raises the
faults (``fault: nan | oom | error``); one real training diverges (lr 1e8) through the CLI
subprocess.
"""
from __future__ import annotations

from tests.faults.fault_helpers import mlflow_status, runs_by_variant, tiny_study
from tests.support.cli import invoke_cli, run_cli
from tests.support.fake_task import FAULT_MESSAGES
from tests.support.study_files import fake_study

FAULTS = ("nan", "oom", "error")
REASONS = {"nan": "FloatingPointError: non-finite loss", "oom": "out of memory: CUDA out of memory",
           "error": "RuntimeError: " + FAULT_MESSAGES["error"]}


def test_failed_trials_are_recorded_shown_and_retried(tmp_path, capsys):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    study = tmp_path / "fail.yaml"
    study.write_text(fake_study("fail", [
        ("first", {"variants": {"nan": {"lr": 0.011, "fault": "nan"}, "oom": {"lr": 0.012, "fault": "oom"},
                                "error": {"lr": 0.013, "fault": "error"}, "lr2": {"lr": 0.02}, "lr3": {"lr": 0.03}}}),
        ("second", {"weight_decay": [1e-5, 2e-5]})], log_dir=log_dir, epochs=2, steps_per_epoch=2, step_s=0.001))
    args = ["run", study, "--workspace", tmp_path / "ws", "--no-progress", "--lease", "5"]

    code, out, err = invoke_cli(*args, capsys=capsys)
    assert code == 1, out + err
    runs = runs_by_variant(tmp_path / "ws")
    for kind in FAULTS:
        run = runs[("first", kind, 0)]
        assert run.status == "failed" and run.error.startswith(REASONS[kind]), run.error
        assert "fake_task.py:" in run.error  # where it happened
        assert mlflow_status(tmp_path / "ws", run.tracking_run_id) == "FAILED"
    others = [r for k, r in runs.items() if k[1] not in FAULTS]
    assert len(others) == 4 and {r.status for r in others} == {"done"}  # the rest, and the next study, went on

    code, out, _ = invoke_cli("status", study, "--workspace", tmp_path / "ws", capsys=capsys)
    assert code == 0
    flat = " ".join(out.split())
    for kind in FAULTS:
        assert REASONS[kind].split(":")[0] in flat, out
    assert "non-finite loss" in flat and "out of memory" in flat and "exploded on purpose" in flat

    code, out, err = invoke_cli(*args, capsys=capsys)  # a plain rerun does not retry them
    assert code == 1 and {r.attempts for r in runs_by_variant(tmp_path / "ws").values()} == {1}

    (log_dir / "fixed").touch()  # the user fixes the cause
    code, out, err = invoke_cli(*args, "--retry-failed", capsys=capsys)
    assert code == 0, out + err
    after = runs_by_variant(tmp_path / "ws")
    assert {r.status for r in after.values()} == {"done"}
    for key, run in after.items():
        failed_before = runs[key].status == "failed"
        assert run.attempts == (2 if failed_before else 1), (key, run.attempts)
        assert run.error is None


def test_diverging_real_training_fails_with_reason_and_exit_1(tmp_path):
    study = tmp_path / "nan.yaml"
    study.write_text(tiny_study("nan", "  - name: s1\n    grid: {lr: [100000000.0, 0.01]}\n", epochs=1,
                                steps_per_epoch=3))
    result = run_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    runs = runs_by_variant(tmp_path / "ws")
    diverged, healthy = runs[("s1", "lr=100000000.0", 0)], runs[("s1", "lr=0.01", 0)]
    assert diverged.status == "failed" and "non-finite" in diverged.error, diverged.error
    assert healthy.status == "done"
    status = run_cli("status", study, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert "non-finite" in " ".join(status.stdout.split())

"""Fault: a checkpoint that cannot be read (issue 11, fault 3).

A truncated checkpoint, a garbage file and a complete checkpoint that does not fit the model
(written by another version) lie in three trials' run directories when ``ablate run`` starts. Each
of those trials, and only it, sets its file aside as ``checkpoint.pt.corrupt-1`` (kept when the
finished trial's checkpoint becomes its final weights) and trains again from scratch; ``ablate
run`` exits 0 and ``ablate status`` says what happened to each. Before the fix every ``ablate
run`` died on the first of them with a torch traceback, training nothing.
"""
from __future__ import annotations

from tests.faults.fault_helpers import (db_rows, epoch_numbers, mlflow_runs_of, runs_by_variant, step_numbers,
                                        tiny_study)
from tests.support.cli import run_cli


def test_unreadable_checkpoints_are_set_aside_and_their_trials_trained_from_scratch(tmp_path):
    import torch

    from runner.orchestrate.context import Position, write_checkpoint
    from runner.orchestrate.session import Session
    from runner.orchestrate.walk import materialize, studies_in_scope

    study = tmp_path / "corrupt.yaml"
    study.write_text(tiny_study("corrupt", "  - name: s1\n    grid: {lr: [0.01, 0.02, 0.03, 0.04]}\n"))
    ws = tmp_path / "ws"
    session = Session.open(study, workspace=ws)
    (state,) = materialize(session, studies_in_scope(session, None))
    session.store.close()
    truncated, garbage, foreign, healthy = (r.run_hashes[0] for r in state.results)

    whole = write_checkpoint(ws / "runs" / truncated, Position(1, 2, 1.0),
                             {"epoch": 1, "step_in_epoch": 0, "global_step": 2, "model": {"w": torch.ones(50_000)}})
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy cut short
    junk = b"\x00garbage, not a checkpoint\n" * 40
    (ws / "runs" / garbage).mkdir(parents=True)
    (ws / "runs" / garbage / "checkpoint.pt").write_bytes(junk)
    write_checkpoint(ws / "runs" / foreign, Position(1, 2, 1.0), {  # readable, but another model's
        "epoch": 1, "step_in_epoch": 0, "global_step": 2, "model": {"no.such.layer": torch.zeros(3)},
        "optimizer": {}, "scheduler": {}, "history": [], "epoch_loss_sum": torch.zeros(3), "rng": {}})

    result = run_cli("run", study, "--workspace", ws, "--no-progress", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output

    runs = {r.hash: r for r in runs_by_variant(ws).values()}
    assert {h: (r.status, r.attempts) for h, r in runs.items()} == {
        h: ("done", 1) for h in (truncated, garbage, foreign, healthy)}  # one attempt each, all trained
    assert runs[healthy].error is None
    for h, words in ((truncated, "cannot be read"), (garbage, "cannot be read"), (foreign, "does not fit this model")):
        run_dir = ws / "runs" / h
        # the set-aside file stays; the new run's checkpoint became its final weights (the default
        # ``checkpoints: {keep: final}`` of a finished run)
        assert sorted(p.name for p in run_dir.glob("checkpoint.pt*")) == ["checkpoint.pt.corrupt-1"]
        assert (run_dir / "weights.pt").is_file()
        note = runs[h].error
        assert words in note and "set aside as checkpoint.pt.corrupt-1" in note and "from scratch" in note, note
        # trained from scratch, each step and epoch once, one MLflow run that ended FINISHED
        assert step_numbers(ws, h) == [1, 2, 3, 4] and epoch_numbers(ws, h) == [1, 2]
        assert [s for _, s in mlflow_runs_of(ws, h)] == ["FINISHED"]
    assert (ws / "runs" / garbage / "checkpoint.pt.corrupt-1").read_bytes() == junk  # kept as it was

    status = run_cli("status", study, "--workspace", ws, cwd=tmp_path)
    shown = " ".join(status.stdout.split())
    assert status.returncode == 0
    assert shown.count("set aside as checkpoint.pt.corrupt-1, trained again from scratch") == 3, status.stdout
    assert not db_rows(ws, "SELECT hash FROM runs WHERE status != 'done'")

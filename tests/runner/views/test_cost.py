"""The cost preview as a user sees it (issue 12): ``ablate inspect`` prints per study the cells,
distinct trainings, finished ones and the time left, with the worst case; ``--calibrate`` times a
few steps of each distinct model; read commands never create a workspace; ``ablate run`` starts
with the preview and, when its output is not a terminal, prints the ETA on its plain lines."""
from __future__ import annotations

import re

import pytest


@pytest.fixture
def study_file(tmp_path, kit):
    return kit.write_study_file(tmp_path, kit.fake_study("costs", kit.COST_STUDIES))


def row(out: str, study: str) -> list[str]:
    """The preview's row of ``study``: cells, distinct, finished, per training, to train, base."""
    line = next(line for line in out.splitlines() if re.match(rf"\s+{study}\s+\d", line))
    return line.split()[1:]


def test_inspect_previews_the_cost_without_creating_a_workspace(study_file, kit):
    code, out, err = kit.invoke_cli("inspect", study_file, "--workspace", study_file.parent / "ws")
    assert code == 0, err
    assert "cost: 2 studies, 4 trials, 3 distinct trainings after dedup, 0 finished" in out
    assert row(out, "lr")[:3] == ["2", "2", "0"] and row(out, "lr")[-1] == "known"
    assert row(out, "more")[:3] == ["2", "1", "0"] and row(out, "more")[-1] == "projected"
    assert "3 without an estimate" in out and f"ablate inspect {study_file} --calibrate" in out
    assert not (study_file.parent / "ws").exists()


def test_calibrate_times_each_distinct_model_once_and_keeps_nothing_without_a_workspace(study_file, kit):
    code, out, err = kit.invoke_cli("inspect", study_file, "--workspace", study_file.parent / "ws", "--calibrate")
    assert code == 0, err
    # two signatures (step_s 0 and 0.01): two calibrations, then every training has an estimate
    assert len(re.findall(r"^calibration \d/2: .* s/step on cpu", out, re.M)) == 2, out
    assert "estimates of the trainings to run: 3 from calibration on this host" in out
    assert "without an estimate" not in out
    assert "calibration: not kept" in out and not (study_file.parent / "ws").exists()


def test_run_starts_with_the_preview_and_prints_the_eta_on_plain_lines(study_file, kit):
    ws = study_file.parent / "ws"
    done = kit.run_cli("run", study_file, "--workspace", ws, cwd=study_file.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cost: 2 studies, 4 trials, 3 distinct trainings after dedup")
    finished = [line for line in lines if line.startswith("[done]")]
    assert len(finished) == 4
    # every outcome line carries the progress (and the ETA while trainings remain: test_progress)
    assert all(re.search(r" -- \d/3 trainings finished", line) for line in finished), finished
    assert finished[-1].endswith(" -- 3/3 trainings finished")
    code, out, _ = kit.invoke_cli("inspect", study_file, "--workspace", ws)
    assert row(out, "lr")[:3] == ["2", "2", "2"] and row(out, "more")[-1] == "known"

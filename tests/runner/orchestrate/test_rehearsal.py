"""``ablate run STUDY_FILE --rehearse`` (issue 12): every distinct trial config of the profile runs
for a couple of steps through the worker's path, stopped at its first step (checkpoint written),
resumed from that checkpoint to the end; per trial ok or the error with its reason, peak memory and
step time; nothing lands among the study's results, so a later real run starts clean.

The fake task (``rehearsal_config``: one epoch of two steps; ``miniature_config``: one step; its
cost signature, the size of a config: ``step_s``) writes down every call, step and checkpoint
(``log_dir``), so the path each rehearsal took is checked, not assumed. The last test rehearses the
report's full profile with the real task within the issue's 10 minutes."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.support.fake_task import read_log

# lr x 2 variants, then 'more' on lr's winner: 'same' restates the winner (one training for both
# studies), 'broken' fails at its first step. Each distinct config has a size (step_s) of its own.
STUDIES = """\
  - name: lr
    variants:
      - {name: fast, set: {lr: 0.01}}
      - {name: slow, set: {lr: 0.001, step_s: 0.001}}
  - name: more
    start_from: previous
    variants:
      - {name: same, set: {lr: 0.01}}
      - {name: wd, set: {weight_decay: 0.001, step_s: 0.002}}
"""
BROKEN = STUDIES + "      - {name: broken, set: {fault: error, fault_at_step: 1, step_s: 0.003}}\n"
# Two sizes: fast and slow share one, big and big_ok another, where big fails at its second step.
SHARED_SIZES = """\
  - name: lr
    variants:
      - {name: fast, set: {lr: 0.01}}
      - {name: slow, set: {lr: 0.001}}
      - {name: big, set: {lr: 0.002, step_s: 0.001, fault: error, fault_at_step: 2}}
      - {name: big_ok, set: {lr: 0.003, step_s: 0.001}}
"""
FULL_PATH = [("start", 0), ("ckpt", 0), ("start", 0), ("step", 1), ("step", 2), ("ckpt", 2), ("done", 2)]


def setup(tmp_path, kit, studies: str = STUDIES):
    log = tmp_path / "log"
    log.mkdir()
    return kit.write_study_file(tmp_path, kit.fake_study("demo", studies, log_dir=log)), log, tmp_path / "ws"


def test_every_distinct_config_is_checkpointed_resumed_and_finished(tmp_path, kit):
    path, log, ws = setup(tmp_path, kit)
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--rehearse")
    assert code == 0, out + err
    assert "4 trials, 3 distinct rehearsal runs" in out
    heads = re.findall(r"^\[ok\] \d/3 (.*): peak RSS [\d.]+ GiB, [\d.]+ s/step, \d+ s$", out, re.M)
    assert sorted(heads) == sorted(["lr / fast / seed 0 = more / same / seed 0", "lr / slow / seed 0",
                                    "more / wd / seed 0"]), out
    assert "rehearsal: 3 ok, 0 ok with warnings, 0 failed" in out
    runs = {p.stem: read_log(log, p.stem) for p in log.glob("*.log")}
    assert len(runs) == 3
    for events in runs.values():  # stopped before its first step with a checkpoint, resumed, finished
        assert events == FULL_PATH, events
    # its own store and experiment; no checkpoint left behind
    rehearsal = ws / "rehearsal"
    assert (rehearsal / "ablate.db").is_file() and not list(rehearsal.glob("runs/*/checkpoint.pt"))


def test_a_config_whose_size_ran_already_runs_its_path_as_a_miniature_and_fails_with_its_size(tmp_path, kit):
    path, log, ws = setup(tmp_path, kit, SHARED_SIZES)
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--rehearse")
    assert code == 1, out + err
    lines = {m[1]: m[0] for m in re.findall(r"^(\[\w+\] \d/4 lr / (\w+) / seed 0: .*)$", out, re.M)}
    assert set(lines) == {"fast", "slow", "big", "big_ok"}, out
    assert re.fullmatch(r"\[ok\] 1/4 .*: peak RSS [\d.]+ GiB, [\d.]+ s/step, \d+ s", lines["fast"])
    assert re.fullmatch(r"\[ok\] 2/4 .*: miniature: 1 step; its size ran as 1/4 \(peak RSS [\d.]+ GiB, "
                        r"[\d.]+ s/step\), \d+ s", lines["slow"]), lines["slow"]
    assert lines["big"].startswith("[error] 3/4") and "fake task exploded on purpose" in lines["big"]
    assert lines["big_ok"].startswith("[error] 4/4 lr / big_ok / seed 0: its size failed in 3/4; miniature: 1 step")
    assert "rehearsal: 2 ok, 0 ok with warnings, 2 failed" in out
    paths = sorted(read_log(log, p.stem) for p in log.glob("*.log"))
    miniature = [("start", 0), ("ckpt", 0), ("start", 0), ("step", 1), ("ckpt", 1), ("done", 1)]
    # fast: the whole path at its size; slow and big_ok: one step each; big: stopped by its fault
    assert paths.count(FULL_PATH) == 1 and paths.count(miniature) == 2 and len(paths) == 4, paths


def test_a_later_real_run_starts_clean(tmp_path, kit):
    path, log, ws = setup(tmp_path, kit)
    assert kit.invoke_cli("run", path, "--workspace", ws, "--rehearse")[0] == 0
    rehearsed = {p.stem for p in log.glob("*.log")}
    code, out, _ = kit.invoke_cli("status", path, "--workspace", ws)
    assert code == 0 and re.search(r"lr\s+│ 0\s+│ 0\s+│ 0\s+│ 0\s+│ 0\s+│ 2", out), out  # all pending
    # its step times are this host's calibration: the cost preview has an estimate for every training
    code, out, _ = kit.invoke_cli("inspect", path, "--workspace", ws)
    assert "0 finished" in out and "3 from calibration on this host" in out, out
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--no-progress")
    assert code == 0, out + err
    real = {p.stem for p in log.glob("*.log")} - rehearsed
    assert len(real) == 3  # every real training ran, from scratch, once: none was taken as rehearsed
    assert all(kit.starts(log, h) == [0] for h in real)


def test_a_config_that_fails_is_named_with_its_reason_and_the_rest_still_runs(tmp_path, kit):
    path, log, ws = setup(tmp_path, kit, BROKEN)
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--rehearse")
    assert code == 1, out + err
    assert re.search(r"^\[error\] \d/4 more / broken / seed 0: .*fake task exploded on purpose.*; "
                     r"peak RSS", out, re.M), out
    assert "rehearsal: 3 ok, 0 ok with warnings, 1 failed" in out


def test_a_task_hook_that_raises_is_named_in_one_line_and_the_rest_still_runs(tmp_path, kit):
    path, log, ws = setup(tmp_path, kit, STUDIES + "      - {name: buggy, set: {fault: hook, step_s: 0.003}}\n")
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--rehearse")
    assert code == 1 and "Traceback" not in out + err, out + err
    assert re.search(r"^\[error\] more / buggy / seed 0: task '\S+' cannot shrink it for a rehearsal: "
                     r"ValueError: fake task's rehearsal hook exploded on purpose \(at fake_task\.py:\d+\)$", out, re.M), out
    assert "rehearsal: 3 ok, 0 ok with warnings, 0 failed, 1 not rehearsed" in out, out


def test_options_of_a_real_run_that_a_rehearsal_cannot_honour_are_refused(tmp_path, kit):
    path, _, ws = setup(tmp_path, kit)
    code, out, err = kit.invoke_cli("run", path, "--workspace", ws, "--rehearse", "--workers", "2")
    assert code == 2 and "--workers: does not apply to --rehearse" in err and "Traceback" not in err
    assert not ws.exists()


#: The issue's bound: the full profile rehearses on a 2-core CPU within 10 minutes (4.7 min here).
FULL_PROFILE_LIMIT_S = 600


@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.timeout(FULL_PROFILE_LIMIT_S + 60)
def test_full_profile_rehearses_on_this_machine(tmp_path, kit):
    """The report's 39 trials (``--profile full``), without Miniscapes or ImageNet weights: synthetic
    stand-ins of the configured sizes, the missing weights named; each of the 11 sizes (model, crop,
    batch) at 256x256, the other 15 distinct configs as miniatures."""
    shutil.copy(kit.REPO / "studies.yaml", tmp_path / "studies.yaml")
    threads = str(os.cpu_count() or 1)  # the whole machine, as a user's rehearsal has it
    env = kit.cli_env(TORCH_HOME=str(tmp_path / "torch"), HOME=str(tmp_path), OMP_NUM_THREADS=threads,
                      MKL_NUM_THREADS=threads)
    done = kit.run_cli("run", "studies.yaml", "--profile", "full", "--rehearse", cwd=tmp_path, env=env,
                       timeout=FULL_PROFILE_LIMIT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert re.search(r"^rehearsal of dlad-mtl \(profile full\): 39 trials, 26 distinct", out, re.M), out
    assert "rehearsed on synthetic scenes of 256x256" in out
    assert re.search(r"put resnet34-\w+\.pth into .*torch/hub/checkpoints", out)
    sized = re.findall(r"^\[(?:ok|warn)\] \d+/26 [^\n]*?: peak RSS [\d.]+ GiB, [\d.]+ s/step, \d+ s$", out, re.M)
    miniatures = re.findall(r"^\[(?:ok|warn)\] \d+/26 .*: miniature: 64x64 crops of 64x64 synthetic scenes, "
                            r"validation on 2 images; its size ran as \d+/26 \(peak RSS", out, re.M)
    assert (len(sized), len(miniatures)) == (11, 15), out
    assert re.search(r"^rehearsal: \d+ ok, \d+ ok with warnings, 0 failed", out, re.M), out

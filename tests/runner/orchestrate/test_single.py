"""`ablate train CONFIG.yaml [--task T]` and `ablate data synth` through the real console script."""
import pytest

from tests.support.cli import ROOT, run_cli as ablate


def test_train_a_small_config_prints_final_metrics_and_resumes_finished(tmp_path):
    config = ROOT / "examples" / "train-resnet18-64x128.yaml"
    small = ["--set", "synthetic_train=8", "--set", "synthetic_val=4", "--set", "epochs=1",
             "--set", "batch_size=4", "--set", "head=plain", "--set", "decoder=none"]
    first = ablate("train", config, "--workspace", tmp_path / "ws", *small, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "epoch   1" in first.stdout and "grader" in first.stdout.splitlines()[-1]
    again = ablate("train", config, "--workspace", tmp_path / "ws", *small, cwd=tmp_path)
    assert again.returncode == 0
    assert "epoch   1" not in again.stdout  # already finished: nothing retrained
    metrics = lambda out: out.splitlines()[-1].split("time")[0]  # noqa: E731 - grader .. steps
    assert metrics(again.stdout) == metrics(first.stdout)


def test_train_any_task_with_task_option_prints_its_metrics_and_resumes(tmp_path):
    """``--task``: the fake task's own keys and metrics, the same resume as a study's trial (a
    second call trains nothing: the run's checkpoint is past its last epoch)."""
    from tests.support.fake_task import Config, final_score, read_log

    config = tmp_path / "fake.yaml"
    config.write_text(f"lr: 0.002\nepochs: 2\nsteps_per_epoch: 3\nlog_dir: {tmp_path}\n")
    first = ablate("train", config, "--task", "tests.support.fake_task", "--workspace", tmp_path / "ws",
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    score = final_score(Config(lr=0.002, epochs=2, steps_per_epoch=3))
    assert [line.split()[:2] for line in first.stdout.splitlines()[:2]] == [["epoch", "1"], ["epoch", "2"]]
    last = first.stdout.splitlines()[-1]
    assert f"score {score:.3f}" in last and f"error {100 - score:.3f}" in last and "params 1,234" in last
    assert "epochs 2  steps 6" in last
    again = ablate("train", config, "--task", "tests.support.fake_task", "--workspace", tmp_path / "ws",
                   cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "epoch   1" not in again.stdout and f"score {score:.3f}" in again.stdout.splitlines()[-1]
    (log,) = tmp_path.glob("*.log")
    assert [entry for entry in read_log(tmp_path, log.stem) if entry[0] in ("start", "done")] == [
        ("start", 0), ("done", 6), ("start", 6), ("done", 6)]  # the second call resumed at the end


def test_train_with_an_unknown_task_exits_2_naming_the_option(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.1\n")
    result = ablate("train", config, "--task", "no_such_task_module", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--task" in result.stderr and "no_such_task_module" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text,line,key", [
    ("encoder: resnet18\nlrr: 0.1\n", 2, "lrr"),
    ("encoder: resnet18\nlr: -1\n", 2, "lr"),
    ("encoder: resnet18\narchitecture: tree\n", 2, "architecture"),
])
def test_bad_config_exits_2_naming_file_line_and_key(tmp_path, text, line, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = ablate("train", path, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert result.returncode == 2
    assert f"bad.yaml:{line}" in result.stderr and key in result.stderr
    assert "Traceback" not in result.stderr
    if key == "lrr":
        assert "did you mean 'lr'" in result.stderr


@pytest.mark.parametrize("text", ["- lr: 0.1\n", "0.1\n"], ids=["list", "scalar"])
def test_a_config_that_is_not_a_mapping_exits_2_even_with_set(tmp_path, text):
    """--set used to write into the list/scalar first: a bare TypeError traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = ablate("train", path, "--workspace", tmp_path / "ws", "--set", "lr=0.1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "bad.yaml" in result.stderr and "expected a mapping" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_synth_writes_the_miniscapes_layout(tmp_path):
    result = ablate("data", "synth", "--out", tmp_path / "d", "--train", "3", "--val", "2",
                    "--size", "64x128", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for split, n in (("train", 3), ("val", 2)):
        for modality, ext in (("rgb", "jpg"), ("semseg", "png"), ("depth", "png")):
            assert sorted(p.name for p in (tmp_path / "d" / split / modality).iterdir()) == \
                [f"{i}.{ext}" for i in range(n)]

from typer.testing import CliRunner

from runner.tasks.mtl.data.cli import data_app
from runner.tasks.mtl.data.miniscapes import MiniscapesFiles


def test_synth_cli(tmp_path):
    r = CliRunner().invoke(data_app, ["synth", "--out", str(tmp_path), "--train", "3",
                                      "--val", "2", "--size", "32x64", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "3 train" in r.output and "2 val" in r.output
    assert MiniscapesFiles(tmp_path, "train").read(2)[0].shape == (32, 64, 3)


def test_bad_size(tmp_path):
    r = CliRunner().invoke(data_app, ["synth", "--out", str(tmp_path), "--size", "64by128"])
    assert r.exit_code == 2 and "HxW" in r.output


def test_existing_dir_refused(tmp_path):
    args = ["synth", "--out", str(tmp_path), "--train", "1", "--val", "1", "--size", "16x16"]
    assert CliRunner().invoke(data_app, args).exit_code == 0
    r = CliRunner().invoke(data_app, args)
    assert r.exit_code == 2

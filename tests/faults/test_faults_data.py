"""Fault 6: bad data sets.

A missing data set directory or split, a truncated PNG, label values outside 0..18 and 255,
modalities of different sizes, an upper-case extension (3.JPG), a dangling symbolic link, a
symbolic link loop and a PNG over PIL's pixel limit (issue 11: these four raised raw exceptions and
failed every trial): ``ablate train`` and ``ablate run`` stop before training with
exit code 2 and a message naming the file. Inside ``ablate run`` the DataError is raised in a
worker during a trial: the trial is *not* recorded as failed (bad input is not a bad trial and
would fail every trial reading it); the run stops with exit 2, the trial is handed back
(``interrupted``, reason stored), and what is already stored stays. Once the data is fixed, the
next ``ablate run`` trains it. With ``--workers 2`` the other worker checkpoints and stops too.
"""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.faults.fault_helpers import run_row, runs_by_variant, step_rows, tiny_study
from tests.support.cli import invoke_cli
from tests.support.fake_task import FAULT_MESSAGES
from tests.support.study_files import fake_study


def _dataset(root: Path) -> Path:
    from runner.tasks.mtl.data.synth import write_synthetic_dataset

    write_synthetic_dataset(root, 4, 2, size=(64, 128))
    return root


def _missing_root(root):
    shutil.rmtree(root)
    return root, "data set directory not found"


def _missing_split(root):
    shutil.rmtree(root / "val")
    return root / "val", "split 'val' not found"


def _truncated_png(root):
    path = root / "train" / "semseg" / "1.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "cannot decode"


def _labels_out_of_range(root):
    path = root / "train" / "semseg" / "2.png"
    labels = np.array(Image.open(path))
    labels[5:9, 5:9] = 40
    labels[10, 10] = 19
    Image.fromarray(labels, mode="L").save(path)
    return path, "label values [19, 40] out of range"


def _size_mismatch(root):
    path = root / "train" / "depth" / "0.png"
    Image.open(path).resize((64, 32)).save(path)
    return path, "size 64x32"


def _upper_case_extension(root):
    path = root / "train" / "rgb" / "3.JPG"
    (root / "train" / "rgb" / "3.jpg").rename(path)
    return path, "extension '.JPG'; expected '.jpg'"


def _dangling_symlink(root):
    path = root / "train" / "depth" / "1.png"
    path.unlink()
    path.symlink_to(root / "gone.png")
    return path, "broken symbolic link"


def _symlink_loop(root):
    path = root / "train" / "semseg" / "0.png"
    path.unlink()
    path.symlink_to("0.png")
    return path, "Too many levels of symbolic links"


def _over_pil_pixel_limit(root):
    """A PNG whose header says 20000x20000 (400 M pixels, over PIL's decompression-bomb limit)."""
    path = root / "train" / "semseg" / "2.png"
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path, "exceeds limit"


CORRUPTIONS = {"missing-root": _missing_root, "missing-split": _missing_split, "truncated-png": _truncated_png,
               "labels-out-of-range": _labels_out_of_range, "size-mismatch": _size_mismatch,
               "upper-case-extension": _upper_case_extension, "dangling-symlink": _dangling_symlink,
               "symlink-loop": _symlink_loop, "over-pil-pixel-limit": _over_pil_pixel_limit}


def _assert_names(code, out, err, culprit: Path, needle: str):
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert str(culprit) in err and needle in err, err


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_ablate_train_bad_data_exits_2_naming_the_file(tmp_path, capsys, corruption):
    root = _dataset(tmp_path / "data")
    culprit, needle = CORRUPTIONS[corruption](root)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data_root: {root}\nencoder: resnet18\ncrop_size: [64, 128]\nepochs: 1\n"
                      f"steps_per_epoch: 1\nbatch_size: 2\ndevice: cpu\n")
    code, out, err = invoke_cli("train", config, "--workspace", tmp_path / "ws", capsys=capsys)
    _assert_names(code, out, err, culprit, needle)
    assert not list((tmp_path / "ws").rglob("checkpoint.pt"))  # stopped before training


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("data-runs") / "ws"  # one MLflow store for the cases below


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_ablate_run_bad_data_exits_2_and_fails_no_trial(tmp_path, capsys, corruption, shared_ws):
    root = _dataset(tmp_path / "data")
    culprit, needle = CORRUPTIONS[corruption](root)
    study = tmp_path / "bad.yaml"
    study.write_text(tiny_study(f"bad-{corruption}", "  - name: s1\n    grid: {lr: [0.01, 0.02]}\n",
                                data_root=str(root)))
    code, out, err = invoke_cli("run", study, "--workspace", shared_ws, "--no-progress", capsys=capsys)
    _assert_names(code, out, err, culprit, needle)
    runs = runs_by_variant(shared_ws)
    mine = [r for r in runs.values() if r.config["data_root"] == str(root)]
    assert len(mine) == 2
    assert "failed" not in {r.status for r in mine} and "running" not in {r.status for r in mine}
    stopped = [r for r in mine if r.status == "interrupted"]
    assert len(stopped) == 1 and stopped[0].error.startswith("stopped on bad input: ") \
        and str(culprit) in stopped[0].error
    assert not step_rows(shared_ws, stopped[0].hash)
    assert not (shared_ws / "runs" / stopped[0].hash / "checkpoint.pt").exists()


@pytest.mark.parametrize("corruption", ["truncated-png", "symlink-loop"])
def test_bad_data_keeps_what_is_stored_and_rerun_after_fix_trains(tmp_path, capsys, corruption):
    root = _dataset(tmp_path / "data")
    culprit, needle = CORRUPTIONS[corruption](root)
    study = tmp_path / "mixed.yaml"
    study.write_text(tiny_study("mixed", "  - name: good\n    grid: {lr: [0.01]}\n"
                                         "  - name: bad\n    start_from: none\n    variants:\n"
                                         f"      - {{name: files, set: {{data_root: '{root}'}}}}\n",
                                epochs=1))
    ws = tmp_path / "ws"
    code, out, err = invoke_cli("run", study, "--workspace", ws, "--no-progress", capsys=capsys)
    _assert_names(code, out, err, culprit, needle)
    before = runs_by_variant(ws)
    good, bad = before[("good", "lr=0.01", 0)], before[("bad", "files", 0)]
    assert good.status == "done" and bad.status == "interrupted"
    good_row = run_row(ws, good.hash)

    shutil.rmtree(root)  # the user fixes the data set
    _dataset(root)
    code, out, err = invoke_cli("run", study, "--workspace", ws, "--no-progress", capsys=capsys)
    assert code == 0, out + err
    after = runs_by_variant(ws)
    assert after[("good", "lr=0.01", 0)] == good and run_row(ws, good.hash) == good_row  # untouched, not retrained
    assert after[("bad", "files", 0)].status == "done" and after[("bad", "files", 0)].attempts == 2


def test_data_error_in_one_of_two_worker_processes_stops_the_run(tmp_path, capsys):
    """The fake task's data fault (``ctx.InputError`` naming a file) in one trial of six, two
    worker processes."""
    study = tmp_path / "procs.yaml"
    study.write_text(fake_study("procs", [("first", [{"lr": [0.001, 0.002, 0.003, 0.004], "momentum": [0.9]},
                                                     {"lr": [0.005], "momentum": [0.9], "fault": ["data"]},
                                                     {"lr": [0.006], "momentum": [0.9]}])],
                                epochs=2, steps_per_epoch=4, step_s=0.3))
    ws = tmp_path / "ws"
    code, out, err = invoke_cli("run", study, "--workspace", ws, "--no-progress", "--workers", "2", capsys=capsys)
    assert code == 2 and "Traceback" not in out + err, out + err
    assert FAULT_MESSAGES["data"] in err  # the message, naming the file
    statuses = {k[1]: r.status for k, r in runs_by_variant(ws).items()}
    assert statuses["lr=0.005,momentum=0.9,fault=data"] == "interrupted", statuses
    assert "failed" not in statuses.values() and "running" not in statuses.values(), statuses
    done = [v for v, s in statuses.items() if s == "done"]
    assert len(done) >= 3, statuses  # what finished before stays finished

"""Issue 11, command-line arguments checked like every other input (exit 2, one line naming the
option), never a traceback or an endless wait:

* an option that names a path to write (``ablate results -o``, ``ablate data synth --out``,
  ``ablate report``'s and ``ablate train``'s workspace) onto a directory, below a regular file or
  on a read-only file system (``/sys``: read-only even for root);
* ``--workers 1000`` / ``--trials-per-gpu 100``: refused before the workspace is made;
* ``--tracking-uri`` of a port nobody listens on: answered within MLflow's bounded retries (it
  took 254 s of MLflow's default retries; the subprocess limit of 120 s below fails that).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.faults.fault_helpers import tiny_study
from tests.support.cli import ROOT, cli_env, invoke_cli, run_cli

STUDIES = ROOT / "studies.yaml"


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err, out + err
    message = err.strip()
    assert len(message.splitlines()) == 1, message
    return message


def _directory(tmp_path: Path) -> Path:
    target = tmp_path / "out"
    target.mkdir()
    return target


def _below_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("a file")
    return tmp_path / "file" / "results.csv"


def _read_only(tmp_path: Path) -> Path:
    return Path("/sys/ablate-results.csv")


@pytest.mark.parametrize("target", [_directory, _below_a_file, _read_only], ids=["directory", "below-a-file", "read-only"])
def test_results_output_that_cannot_be_written_exits_2(tmp_path, capsys, target):
    path = target(tmp_path)
    code, out, err = invoke_cli("results", STUDIES, "--workspace", tmp_path / "ws", "-o", path, capsys=capsys)
    message = _one_line(code, out, err)
    assert message.startswith(f"ablate: --output {path}: cannot write there ("), message
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []  # the atomic writer's temporary file is gone
    if path.is_dir():
        assert list(path.iterdir()) == []


def test_data_synth_out_on_a_read_only_path_exits_2(tmp_path, capsys):
    code, out, err = invoke_cli("data", "synth", "--out", "/sys/ablate-data", "--train", "1", "--val", "1", capsys=capsys)
    message = _one_line(code, out, err)
    assert "--out /sys/ablate-data: cannot write there (" in message, message


def test_report_into_a_workspace_where_it_cannot_write_exits_2(tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "report").write_text("a file where the report directory goes")
    code, out, err = invoke_cli("report", STUDIES, "--workspace", ws, "--no-log", capsys=capsys)
    message = _one_line(code, out, err)
    assert message.startswith(f"ablate: --workspace {ws}: cannot write there ("), message
    assert str(ws / "report") in message, message
    assert (ws / "report").read_text() == "a file where the report directory goes"


@pytest.mark.parametrize("blocked", ["data", "sys"])
def test_train_in_a_workspace_where_it_cannot_write_exits_2(tmp_path, capsys, blocked):
    config = tmp_path / "cfg.yaml"
    config.write_text("encoder: resnet18\nhead: plain\ndecoder: none\ncrop_size: [64, 128]\nepochs: 1\n"
                      "steps_per_epoch: 1\nbatch_size: 2\nsynthetic_train: 4\nsynthetic_val: 2\ndevice: cpu\n")
    ws = Path("/sys") if blocked == "sys" else tmp_path / "ws"
    if blocked == "data":  # the synthetic data set goes to <ws>/data: a file is in the way
        ws.mkdir()
        (ws / "data").write_text("in the way")
    code, out, err = invoke_cli("train", config, "--workspace", ws, capsys=capsys)
    message = _one_line(code, out, err)
    assert message.startswith(f"ablate: --workspace {ws}: cannot write there ("), message


@pytest.mark.parametrize("args, needle", [
    (["--workers", "1000"], "--workers 1000: expected 1 to 64"),
    (["--workers", "0"], "--workers 0: expected 1 to 64"),
    (["--trials-per-gpu", "100"], "--trials-per-gpu 100: expected 1 to 16"),
])
def test_worker_counts_are_capped(tmp_path, capsys, args, needle):
    ws = tmp_path / "ws"
    code, out, err = invoke_cli("run", STUDIES, "--workspace", ws, "--no-progress", *args, capsys=capsys)
    message = _one_line(code, out, err)
    assert needle in message, message
    assert not ws.exists()  # refused before the workspace is opened


def test_refused_tracking_uri_is_reported_within_bounded_retries(tmp_path):
    """No MLFLOW_HTTP_* variable is set: ablate's own bounds apply (the user's would win)."""
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    study = tmp_path / "tiny.yaml"
    study.write_text(tiny_study("tiny", "  - name: s1\n    grid: {lr: [0.01]}\n"))
    env = {k: v for k, v in cli_env().items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    uri = f"http://127.0.0.1:{port}"
    result = run_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", "--tracking-uri", uri,
                     cwd=tmp_path, env=env, timeout=120)
    message = _one_line(result.returncode, result.stdout, result.stderr)
    assert message.startswith(f"ablate: --tracking-uri {uri}: cannot reach the MLflow tracking store: "), message
    assert not (tmp_path / "ws" / "runs").exists()

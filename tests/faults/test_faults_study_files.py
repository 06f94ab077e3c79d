"""Fault 5: broken study files through the command line.

Every broken file of tests/ablations/test_study_file_errors.py (60+ cases) given to
``ablate run``: exit code 2, a short message naming the file, line and key, no traceback, and
nothing written (no workspace). In-process through ``runner.cli.main`` (the console script's
entry point, which maps InputError to exit 2); a few cases also as real subprocesses.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ablations.test_study_file_errors import CASES
from tests.support.cli import invoke_cli, run_cli


def _check(code: int, out: str, err: str, path: Path, line: int, key, needles, workspace: Path) -> None:
    text = out + err
    assert code == 2, text
    assert "Traceback" not in text, text
    message = err.strip()
    assert message.startswith("ablate: "), text
    assert f"{path}:{line}:" in message, message           # the file and the line
    if key is not None:
        assert key in message, message                     # the key
    for needle in needles:
        assert needle in message, message
    assert len(message.splitlines()) <= 3 and len(message) <= 600, message  # short
    assert not workspace.exists()                          # nothing written


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("text,line,key,needles,profile", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_study_file_exits_2_naming_file_line_key(tmp_path, capsys, text, line, key, needles, profile):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    ws = tmp_path / "ws"
    args = ["run", path, "--workspace", ws, "--no-progress"] + (["--profile", profile] if profile else [])
    code, out, err = invoke_cli(*args, capsys=capsys)
    _check(code, out, err, path, line, key, needles, ws)


@pytest.mark.parametrize("case_id", ["misspelt-config-key", "python-tag", "study-name-traversal"])
def test_broken_study_file_subprocess(tmp_path, case_id):
    _, text, line, key, needles, profile = next(c for c in CASES if c[0] == case_id)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    ws = tmp_path / "ws"
    result = run_cli("run", path, "--workspace", ws, "--no-progress", cwd=tmp_path, timeout=120)
    _check(result.returncode, result.stdout, result.stderr, path, line, key, needles, ws)

"""Fault 8: safety. The study file is data, names cannot leave the workspace, the UI is local.

* A ``!!python/object/apply:os.system`` (or ``!!python/name:``) tag in a study file or a
  ``ablate train`` config is refused with exit 2 and the command never runs.
* Study, variant, experiment and profile names containing ``..`` or ``/`` are refused; run
  directories are named by the config hash, so even a grid over paths stays inside the workspace.
* ``ablate ui`` listens on 127.0.0.1 unless ``--host`` says otherwise (tested without serving).
"""
from __future__ import annotations

import re

import pytest

from tests.faults.fault_helpers import tiny_study
from tests.support.cli import invoke_cli

PAYLOADS = ["!!python/object/apply:os.system ['touch {marker}']",
            "!!python/object/apply:subprocess.call [['touch', '{marker}']]",
            "!!python/name:os.system ''"]


@pytest.mark.parametrize("payload", PAYLOADS, ids=["os.system", "subprocess.call", "python-name"])
def test_python_tags_are_refused_and_never_run(tmp_path, capsys, payload):
    marker = tmp_path / "pwned"
    tag = payload.format(marker=marker)
    study = tmp_path / "evil.yaml"
    study.write_text(tiny_study("evil", "  - name: s1\n    grid: {lr: [0.01]}\n").replace(
        "  epochs: 2", f"  epochs: {tag}"))
    code, out, err = invoke_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", capsys=capsys)
    assert code == 2 and "unsupported YAML" in err and "Traceback" not in out + err, out + err
    assert f"{study}:" in err
    config = tmp_path / "evil-config.yaml"
    config.write_text(f"encoder: resnet18\nlr: {tag}\n")
    code, out, err = invoke_cli("train", config, "--workspace", tmp_path / "ws2", capsys=capsys)
    assert code == 2 and "unsupported YAML" in err, out + err
    assert not marker.exists()
    assert not (tmp_path / "ws").exists() and not (tmp_path / "ws2").exists()


TRAVERSALS = {
    "study": "  - name: ../../escaped\n    grid: {lr: [0.01]}\n",
    "study-slash": "  - name: a/b\n    grid: {lr: [0.01]}\n",
    "variant": "  - name: s1\n    variants:\n      - {name: ../../escaped, set: {lr: 0.01}}\n",
    "variant-absolute": "  - name: s1\n    variants:\n      - {name: /tmp/escaped, set: {lr: 0.01}}\n",
}


@pytest.mark.parametrize("where", list(TRAVERSALS))
def test_names_that_escape_the_workspace_are_refused(tmp_path, capsys, where):
    study = tmp_path / "trav.yaml"
    study.write_text(tiny_study("trav", TRAVERSALS[where]))
    code, out, err = invoke_cli("run", study, "--workspace", tmp_path / "a" / "ws", "--no-progress", capsys=capsys)
    assert code == 2 and "invalid" in err and "Traceback" not in out + err, out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trav.yaml"]  # nothing created anywhere


def test_experiment_name_traversal_is_refused(tmp_path, capsys):
    study = tmp_path / "trav.yaml"
    study.write_text(tiny_study("../../escaped", "  - name: s1\n    grid: {lr: [0.01]}\n"))
    code, out, err = invoke_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", capsys=capsys)
    assert code == 2 and "invalid experiment name" in err, out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trav.yaml"]


def test_run_directories_are_hashes_inside_the_workspace(tmp_path):
    from runner.orchestrate.walk import materialize, studies_in_scope
    from runner.orchestrate.session import Session

    study = tmp_path / "paths.yaml"
    study.write_text(tiny_study("paths", "  - name: s1\n    grid: {data_root: ['../../../etc', '/etc', synthetic]}\n"))
    session = Session.open(study, workspace=tmp_path / "ws")
    (state,) = materialize(session, studies_in_scope(session, None))
    assert len(state.results) == 3
    for result in state.results:
        assert "/" not in result.variant  # names made from values are sanitised, too
        for run_hash in result.run_hashes:
            assert re.fullmatch(r"[0-9a-f]{16}", run_hash)
            run_dir = session.run_dir(run_hash).resolve()
            assert run_dir.parent == (tmp_path / "ws" / "runs").resolve()


def test_ui_listens_on_loopback_by_default(tmp_path, capsys, monkeypatch):
    import runner.tracking.ui

    ws = tmp_path / "ws"
    ws.mkdir()
    command = runner.tracking.ui.ui_command(ws, host="127.0.0.1", port=5000, optuna=False)
    assert command[command.index("--host") + 1] == "127.0.0.1"

    calls = []
    monkeypatch.setattr(runner.tracking.ui, "check_port", lambda host, port: None)  # 5000 may be taken here
    monkeypatch.setattr(runner.tracking.ui, "run_server", lambda cmd: calls.append(cmd) or 0)
    code, out, err = invoke_cli("ui", "--workspace", ws, capsys=capsys)
    assert code == 0 and len(calls) == 1, out + err
    assert calls[0][calls[0].index("--host") + 1] == "127.0.0.1" and "http://127.0.0.1:5000" in out
    assert "warning" not in err

    code, out, err = invoke_cli("ui", "--workspace", ws, "--host", "0.0.0.0", capsys=capsys)
    assert code == 0 and calls[1][calls[1].index("--host") + 1] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0" in err  # only when told, and then with a warning


def test_optuna_dashboard_on_a_workspace_without_a_search_says_so(tmp_path, capsys, monkeypatch):
    """optuna-dashboard on a missing storage file created an empty one and crashed with a
    traceback ("no such table: version_info"); ablate stops first, exit 2, with what to do."""
    import runner.tracking.ui

    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setattr(runner.tracking.ui.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls = []
    monkeypatch.setattr(runner.tracking.ui, "check_port", lambda host, port: None)  # 5000 may be taken here
    monkeypatch.setattr(runner.tracking.ui, "run_server", lambda cmd: calls.append(cmd) or 0)
    code, out, err = invoke_cli("ui", "--workspace", ws, "--optuna", capsys=capsys)
    assert code == 2 and calls == [], out + err
    assert "no Optuna storage" in err and "search" in err and "Traceback" not in err
    assert not (ws / "optuna.db").exists()

    (ws / "optuna.db").write_bytes(b"")  # once a search has run, the dashboard is served
    code, out, err = invoke_cli("ui", "--workspace", ws, "--optuna", capsys=capsys)
    assert code == 0 and calls[0][0] == "/usr/bin/optuna-dashboard" and "optuna.db" in calls[0][1]

"""Issue 11, ``ablate ui``: a real MLflow UI server in a subprocess.

* On a port that is already in use, ``ablate ui`` printed "serving" and exited 0 (MLflow logged
  EADDRINUSE and exited 0): it now stops first with exit 2 naming ``--port``.
* Stopped by SIGTERM, ``ablate ui`` left the MLflow server and its workers running (and holding
  the port): the server now runs in a process group of its own, which ``ablate ui`` ends before
  it exits. Every process of the tree is read from /proc (psutil is not a dependency).
"""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from tests.faults.fault_helpers import wait_for
from tests.support.cli import run_cli, start_cli


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stat(pid: int):
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]


def _alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == started


def _tree(root: int) -> dict[int, str]:
    """Every descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents[int(entry)] = stat
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, started) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ui_on_a_busy_port_exits_2_naming_the_port(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("ui", "--workspace", ws, "--port", port, cwd=tmp_path, timeout=180)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in result.stderr, result.stderr
    assert "serving" not in result.stdout and "Traceback" not in result.stderr


def test_sigterm_ends_the_server_and_every_process_it_started(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    port = _free_port()
    ui = start_cli("ui", "--workspace", ws, "--port", port, cwd=tmp_path, log=tmp_path / "ui.log",
                   start_new_session=True)
    tree: dict[int, str] = {}
    try:
        wait_for(lambda: _listening(port) or ui.poll() is not None, 240, "the MLflow UI to listen")
        assert ui.poll() is None, (tmp_path / "ui.log").read_text()
        tree = _tree(ui.pid)
        assert tree, "the server runs as a child process"
        ui.send_signal(signal.SIGTERM)
        code = ui.wait(timeout=60)
        wait_for(lambda: not [p for p, started in tree.items() if _alive(p, started)], 30,
                 "every process of the server's tree to end")
        assert not _listening(port)
        assert code == 0, (tmp_path / "ui.log").read_text()  # stopped as asked: no failure
    finally:  # whatever survived (without the fix: the whole server) is ended here, by pid
        for pid, started in tree.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()
            ui.wait()

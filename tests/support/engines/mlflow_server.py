"""A throwaway MLflow tracking server for tests, and the REST calls a UI would make to it.

``mlflow server`` on 127.0.0.1 and a free port, run from a directory of its own (not the
workspace) with its proxied artifact store (``--serve-artifacts --artifacts-destination``), as a
team would run it on another host. Started in a new session and stopped by its PID's process
group (uvicorn is its child). MLflow's background job runner (seven huey consumers, for GenAI
features) is switched off: it only costs CPU here.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root
        self.artifacts = root / "artifacts"

    def get(self, route: str, **params) -> bytes:
        """GET ``route`` (e.g. ``/get-artifact``); raises ``urllib.error.HTTPError`` on 4xx/5xx."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{route}{query}", timeout=60) as response:
            return response.read()

    def api(self, endpoint: str, body: dict | None = None, **params) -> dict:
        """MLflow's REST API, ``/api/2.0/mlflow/<endpoint>``: POST ``body`` or GET ``params``."""
        if body is None:
            return json.loads(self.get(f"/api/2.0/mlflow/{endpoint}", **params))
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def runs(self, experiment_name: str) -> list[dict]:
        """Every run of the experiment (REST ``runs/search``), with tags as a dict."""
        exp = self.api("experiments/get-by-name", experiment_name=experiment_name)["experiment"]
        runs, token = [], None
        while True:
            body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self.api("runs/search", body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                break
        for run in runs:
            run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        return runs

    def metric_steps(self, run_id: str, key: str) -> list[int]:
        """The steps of every logged point of ``key`` in ``run_id``, in order (duplicates kept)."""
        history = self.api("metrics/get-history", run_id=run_id, metric_key=key, max_results=25000)
        return sorted(int(m.get("step", 0)) for m in history.get("metrics", []))

    def artifact(self, run_id: str, path: str) -> bytes:
        """A run's artifact as the UI fetches it (``/get-artifact``), from any host."""
        return self.get("/get-artifact", path=path, run_uuid=run_id)


@contextmanager
def mlflow_server(backend_store_uri: str | None = None) -> Iterator[MlflowServer]:
    """Serve ``backend_store_uri`` (default: SQLite in the server's own directory) for the
    ``with`` block; stop it by its process group afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ablate-mlflow-server-"))
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    log = root / "server.log"
    proc = None
    try:
        for _attempt in range(3):  # a free port may be taken between probing and binding
            port = _free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                     "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
            server = MlflowServer(f"http://127.0.0.1:{port}", root)
            deadline = time.monotonic() + 180  # migrations of a new PostgreSQL store: tens of seconds on 2 cores
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if server.get("/health").strip() == b"OK":
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.3)
            else:
                if proc.poll() is None:
                    raise AssertionError(f"mlflow server not up after 180 s:\n{log.read_text()[-4000:]}")
                continue  # exited (port taken?): try another port
            yield server
            return
        raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-4000:]}")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)

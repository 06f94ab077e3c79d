"""Artifacts follow the tracking server: with an http(s) tracking URI (``--tracking-uri`` or
``ABLATE_TRACKING_URI``) the experiment is created without a local artifact location, so the
server's proxied artifact store keeps each trial's sample image and the report, and its UI shows
them from any host. With a local store, artifacts stay in ``<workspace>/mlartifacts/``
(test_tracking.py). An experiment made earlier with a local location keeps it (MLflow cannot
move it) and ablate says so.

The server is a real ``mlflow server`` (``tests/support/engines/mlflow_server.py``) run from a
directory of its own.
"""
from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server():
    from tests.support.engines.mlflow_server import mlflow_server

    with mlflow_server() as running:
        yield running


def test_a_trial_and_the_report_log_their_artifacts_through_the_server(server, tmp_path, kit):
    study = kit.write_study_file(tmp_path, kit.TINY_DEFAULTS + "name: via-server\nstudies:\n"
                                 "  - name: lr\n    grid: {lr: [0.001]}\n")
    workspace = tmp_path / "ws"
    env = kit.cli_env(ABLATE_TRACKING_URI=server.url)
    for command in (["run", "--no-progress"], ["report"]):
        done = kit.run_cli(command[0], study, "--workspace", workspace, *command[1:], cwd=tmp_path, env=env,
                           timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr

    exp = server.api("experiments/get-by-name", experiment_name="via-server-default")["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:"), exp
    runs = server.runs("via-server-default")
    (trial, ) = [r for r in runs if "config_hash" in r["tags"]]
    (report, ) = [r for r in runs if r["tags"].get("ablate.kind") == "report"]
    assert trial["info"]["artifact_uri"].startswith("mlflow-artifacts:"), trial["info"]
    png = server.artifact(trial["info"]["run_id"], "samples/samples.png")  # what the UI shows
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert (workspace / "report" / "report.md").read_bytes() == server.artifact(report["info"]["run_id"], "report.md")
    # they are in the server's store, not in the workspace
    assert [p.name for p in server.artifacts.rglob("samples.png")] == ["samples.png"]
    assert not (workspace / "mlartifacts").exists()


def test_an_experiment_with_a_local_artifact_location_is_used_with_a_warning(server, tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from runner.tracking.mlflow_tracker import ensure_experiment

    client = MlflowClient(server.url)
    local = (tmp_path / "mlartifacts").as_uri()
    exp_id = client.create_experiment("made-before", artifact_location=local)
    with caplog.at_level(logging.WARNING, logger="runner.tracking.mlflow_tracker"):
        assert ensure_experiment(client, "made-before") == exp_id
        assert ensure_experiment(client, "made-before") == exp_id  # said once per process
        new_id = ensure_experiment(client, "made-now")
    warnings = [r.getMessage() for r in caplog.records if r.name == "runner.tracking.mlflow_tracker"]
    assert len(warnings) == 1 and local in warnings[0] and server.url in warnings[0], warnings
    assert "rename the experiment" in warnings[0]
    assert client.get_experiment(new_id).artifact_location.startswith("mlflow-artifacts:")

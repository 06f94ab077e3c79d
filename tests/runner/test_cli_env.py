"""The store URLs come from the environment when no option gives them (ABLATE_DB,
ABLATE_OPTUNA_STORAGE, ABLATE_TRACKING_URI: passwords stay off command lines), and a bad one is
bad input named by its option, as on the command line. Nothing trains: each is refused first
(port 1 refuses connections at once; MLflow is told not to retry)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("variables, expected", [
    ({"ABLATE_DB": "postgresql+psycopg2://nobody@127.0.0.1:1/ablate"},
     "--db postgresql+psycopg2://nobody@127.0.0.1:1/ablate: cannot open the database"),
    ({"ABLATE_DB": "sqlite:///{tmp}/shared.db", "ABLATE_OPTUNA_STORAGE": "sqlite:///{tmp}/shared.db"},
     "Optuna needs a database of its own"),
    ({"ABLATE_TRACKING_URI": "http://127.0.0.1:1"},
     "--tracking-uri http://127.0.0.1:1: cannot reach the MLflow tracking store"),
], ids=["db", "optuna-storage", "tracking-uri"])
def test_store_urls_from_the_environment(variables, expected, tmp_path, kit):
    study = kit.write_study_file(tmp_path, kit.CHAIN_STUDIES)
    env = kit.cli_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **{k: v.format(tmp=tmp_path) for k, v in variables.items()})
    done = kit.run_cli("run", study, "--workspace", tmp_path / "ws", "--no-progress", env=env, cwd=tmp_path,
                       timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list((tmp_path / "ws").glob("runs/*")), "nothing trained"

"""Real engines the "many machines" tests start for themselves, each torn down by PID: a
throwaway PostgreSQL cluster (``pg_cluster``), a single-node Slurm with munge (``slurm_cluster``)
and an MLflow tracking server (``mlflow_server``). Where one cannot run, its tests are skipped
with the reason (``scripts/install-test-engines.sh`` installs them)."""

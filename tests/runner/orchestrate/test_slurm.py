"""Many machines, tested for real: the shipped ``examples/slurm-workers.sbatch``, unchanged, runs
as a Slurm array job on a single-node Slurm cluster, every task an ``ablate run`` sharing a
PostgreSQL result store, a PostgreSQL Optuna storage and an MLflow tracking server (PostgreSQL
backend, proxied artifact store, run from a directory of its own) on 127.0.0.1.

The engines are real (``tests/support/engines/``: Slurm, PostgreSQL, an MLflow server); where they
are not installed the test is skipped with the reason (``bash scripts/install-test-engines.sh``
installs them; CI runs it). The template gets everything from the environment, as documented in
its header: the study file and a tiny profile (real ResNet-18 training on synthetic 64x128
scenes), ``--lease`` through ``ABLATE_RUN_ARGS``, the store URLs without a password (the result
store's role needs one: it comes from a libpq password file, ``PGPASSFILE``). Resources come
from the ``sbatch`` command line (``--cpus-per-task=1``: two of the three tasks run at once on
two cores, the third starts when one ends).

While the job runs, a ``scancel`` of one task in the middle of a trial (its worker checkpoints
and hands the trial back) and a ``kill -9`` of another task's ``ablate`` process after it logged
steps past its last checkpoint (its lease expires) are each resumed by another task from the
checkpoint under the same MLflow run. Then: every trial trained once (the steps stored before
each fault are untouched), one FINISHED MLflow run per trial with every step logged once, the
sample image served by the MLflow server's artifact API (nothing in the workspace's
``mlartifacts/``), and ``ablate status`` / ``results`` / ``report`` against the shared stores.

``pytest -s`` prints the takeover times and the test's wall time.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(540)]

TEMPLATE = ROOT / "examples" / "slurm-workers.sbatch"
ROLE = "ablate_slurm"          # the workers' database role: password only through PGPASSFILE
LEASE_S = 10                   # the kill -9 takeover waits for it
STEPS, EPOCHS = 25, 3          # 75 steps a trial; steps reach MLflow every 10 and at each epoch's end
LRS = [0.001, 0.0005, 0.0002, 0.0001]
STUDY = f"""\
name: slurm-e2e
defaults:
  data_root: synthetic
  synthetic_train: 50
  synthetic_val: 4
  synthetic_size: [64, 128]
  crop_size: [64, 128]
  encoder: resnet34
  encoder_weights: none
  head: plain
  decoder: none
  optimizer: adam
  epochs: 16
  batch_size: 2
  val_batch_size: 4
  device: cpu
profiles:
  tiny:
    overrides: {{encoder: resnet18, epochs: {EPOCHS}, steps_per_epoch: {STEPS}}}
studies:
  - name: lr
    start_from: none
    grid: {{lr: {LRS}}}
"""
EXPERIMENT = "slurm-e2e-tiny"


# --------------------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def engines(pg_cluster):
    """PostgreSQL (a role with a password owning the result and Optuna databases), a single-node
    Slurm cluster and an MLflow server on PostgreSQL; all torn down by PID afterwards."""
    from tests.support.engines.mlflow_server import mlflow_server
    from tests.support.engines.slurm_cluster import single_node_slurm

    started = time.monotonic()
    with single_node_slurm() as slurm:  # skips first where Slurm is not installed
        password = secrets.token_hex(12)
        _password_role(pg_cluster, password)
        stores = {name: _createdb(pg_cluster, name, owner=ROLE) for name in ("ablate_slurm", "ablate_slurm_optuna")}
        with mlflow_server(pg_cluster.createdb("mlflow_slurm")) as server:
            print(f"\n[slurm] Slurm, munge and the MLflow server up in {time.monotonic() - started:.1f} s")
            yield {"pg": pg_cluster, "slurm": slurm, "server": server, "password": password, "stores": stores}


def _pg(pg_cluster, dbname="postgres"):
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres", dbname=dbname)
    conn.autocommit = True
    return conn


def _password_role(pg_cluster, password: str) -> None:
    """A role that must log in with a password: a ``scram-sha-256`` line for it ahead of the
    cluster's ``trust`` lines, and a check that it is refused without one."""
    import psycopg2

    conn = _pg(pg_cluster)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (password,))
            cur.execute("SHOW hba_file")
            hba = Path(cur.fetchone()[0])
            hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    deadline = time.monotonic() + 30
    while True:  # the reload is asynchronous: wait until the role is refused without a password
        try:
            psycopg2.connect(host="127.0.0.1", port=pg_cluster.port, user=ROLE, dbname="postgres",
                             passfile=os.devnull).close()
        except psycopg2.OperationalError as exc:
            if "password" in str(exc):
                return
            raise
        assert time.monotonic() < deadline, f"pg_hba.conf reload: {ROLE} still logs in without a password"
        time.sleep(0.1)


def _createdb(pg_cluster, name: str, owner: str) -> str:
    conn = _pg(pg_cluster)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
    finally:
        conn.close()
    return f"postgresql+psycopg2://{owner}@127.0.0.1:{pg_cluster.port}/{name}"


# --------------------------------------------------------------------------- read-outs
class Watch:
    """Read-outs of the running job: the result store (its tables, read as the superuser with
    psycopg2 while the tasks write them), MLflow (REST), Slurm."""

    def __init__(self, engines, job: str, workspace: Path, logs_dir: Path):
        self.submitted = time.monotonic()
        self.conn = _pg(engines["pg"], "ablate_slurm")
        self.server, self.slurm, self.job = engines["server"], engines["slurm"], job
        self.workspace, self.logs_dir = workspace, logs_dir

    def rows(self, sql: str, args=()) -> list[dict]:
        import psycopg2

        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, r)) for r in cur.fetchall()]
        except psycopg2.errors.UndefinedTable:  # the first task has not created the tables yet
            return []

    def runs(self) -> dict[str, dict]:
        return {r["hash"]: r for r in self.rows("SELECT * FROM runs")}

    def steps(self, run_hash: str) -> list[tuple]:
        """(step, wall time, loss) of every stored step of the run."""
        return [tuple(r.values()) for r in self.rows(
            "SELECT step, wall_time_s, value FROM step_metrics WHERE run_hash = %s AND name = 'loss' "
            "ORDER BY step", (run_hash,))]

    def epochs(self, run_hash: str) -> list[int]:
        return [r["epoch"] for r in self.rows(
            "SELECT DISTINCT epoch FROM epoch_metrics WHERE run_hash = %s ORDER BY epoch", (run_hash,))]

    def checkpointed(self, run_hash: str) -> bool:
        return (self.workspace / "runs" / run_hash / "checkpoint.pt").exists()

    def running_tasks(self) -> set[str]:
        return {line.split()[0].rsplit("_", 1)[-1] for line in self.slurm.queued(self.job) if "RUNNING" in line}

    def say(self, message: str) -> None:
        print(f"[slurm +{time.monotonic() - self.submitted:5.1f} s] {message}", flush=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.logs_dir.glob("slurm-*.out")))

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.2):
        """Poll ``predicate`` until it returns something; fail with the tasks' logs on timeout or
        when the job is gone before (a task that cannot start would otherwise look like a hang)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if not self.slurm.queued(self.job):
                value = predicate()
                if value:
                    return value
                raise AssertionError(f"the job ended while waiting for {what}\n{self.logs()}")
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")


def task_of(worker: str) -> tuple[int, str | None]:
    """(pid, Slurm array task id) of a worker id ``host:pid``, from the process's environment;
    the task is None once the process is gone."""
    pid = int(worker.rsplit(":", 1)[1])
    try:
        environ = Path(f"/proc/{pid}/environ").read_text()
    except FileNotFoundError:
        return pid, None
    env = dict(kv.split("=", 1) for kv in environ.split("\0") if "=" in kv)
    return pid, env["SLURM_ARRAY_TASK_ID"]


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


# --------------------------------------------------------------------------- the test
def test_slurm_array_job_shares_the_stores_and_resumes_after_scancel_and_kill(engines, tmp_path, kit):
    t_start = time.monotonic()
    slurm, server = engines["slurm"], engines["server"]
    study = tmp_path / "studies.yaml"
    study.write_text(STUDY)
    workspace = tmp_path / "shared-ws"
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{engines['pg'].port}:*:{ROLE}:{engines['password']}\n")
    pgpass.chmod(0o600)
    shim = tmp_path / "bin"  # `ablate` as the job finds it: this checkout, this interpreter
    shim.mkdir()
    (shim / "ablate").write_text(f'#!/bin/sh\nexec {sys.executable} -m runner.cli "$@"\n')
    (shim / "ablate").chmod(0o755)
    env = kit.cli_env(PATH=f"{shim}{os.pathsep}{os.environ['PATH']}", COLUMNS="200", PGPASSFILE=str(pgpass),
                      ABLATE_WORKSPACE=str(workspace), ABLATE_DB=engines["stores"]["ablate_slurm"],
                      ABLATE_OPTUNA_STORAGE=engines["stores"]["ablate_slurm_optuna"],
                      ABLATE_TRACKING_URI=server.url, ABLATE_STUDY_FILE=str(study), ABLATE_PROFILE="tiny",
                      ABLATE_RUN_ARGS=f"--lease {LEASE_S}")
    job = slurm.sbatch("--array=0-2", "--cpus-per-task=1", f"--output={tmp_path}/slurm-%A_%a.out", str(TEMPLATE),
                       env=env, cwd=tmp_path)
    watch = Watch(engines, job, workspace, tmp_path)
    try:
        scancelled = _scancel_mid_trial(watch)
        killed = _kill_after_logged_steps(watch, exclude={scancelled["hash"]})
        assert watch.slurm.wait_gone(job, timeout=300), f"the job did not end\n{watch.logs()}"
        job_wall = time.monotonic() - t_start
        watch.say("the job ended")
        _check_tasks(watch, scancelled, killed)
        _check_store(watch, [scancelled, killed])
        _check_mlflow(watch, [scancelled, killed])
        watch.say("stores checked")
        _check_read_commands(watch, env, study, workspace, kit)
        watch.say("status, results, report checked")
    except BaseException:
        print(watch.logs())
        raise
    for what, fault in (("scancel", scancelled), (f"kill -9 (lease {LEASE_S} s)", killed)):
        print(f"[slurm] takeover after {what}: claimable after {fault['free_s']:.1f} s, claimed by task "
              f"{fault['new_task']} after {fault['claimed_s']:.1f} s, training past step {fault['step']} after "
              f"{fault['resumed_s']:.1f} s")
    print(f"[slurm] job (3 tasks, {len(LRS)} trials) done {job_wall:.0f} s after submission; "
          f"test {time.monotonic() - t_start:.0f} s")



def _scancel_mid_trial(watch: Watch) -> dict:
    """``scancel`` the task training a trial in its second epoch (its first checkpoint written)."""
    def second_epoch():
        for h, run in watch.runs().items():
            if run["status"] == "running" and watch.checkpointed(h) and watch.epochs(h) == [1]:
                return {**run, "steps_before": watch.steps(h)}

    victim = watch.wait(second_epoch, 240, "a trial in its second epoch")
    pid, task = task_of(victim["worker"])
    assert "postgresql" not in cmdline(pid), "store URLs (and passwords) must not be on the command line"
    t0 = time.monotonic()
    watch.slurm.run("scancel", f"{watch.job}_{task}")
    watch.say(f"scancel task {task} (trial {victim['hash']} in its second epoch)")
    return {**victim, "task": task, "pid": pid, **_takeover(watch, victim, task, t0)}


def _kill_after_logged_steps(watch: Watch, exclude: set) -> dict:
    """``kill -9`` the ``ablate`` process of a task whose trial logged steps to MLflow past its
    last checkpoint (a step count that is not an epoch's end): the resume replays those steps."""
    def logged_past_checkpoint():
        running = watch.running_tasks()
        for h, run in watch.runs().items():
            if h in exclude or run["status"] != "running" or not run["tracking_run_id"] or not watch.checkpointed(h):
                continue
            (pid, task), epochs = task_of(run["worker"]), watch.epochs(h)
            if task is None or not running - {task} or len(epochs) >= EPOCHS:
                continue  # gone, or the last task alive, or in its last epoch
            logged = watch.server.metric_steps(run["tracking_run_id"], "loss")
            if logged and logged[-1] % STEPS and logged[-1] > STEPS * len(epochs):
                return {**run, "pid": pid, "task": task, "steps_before": watch.steps(h)[:STEPS],
                        "logged": logged[-1], "epochs": epochs}

    victim = watch.wait(logged_past_checkpoint, 240, "a trial with steps in MLflow past its checkpoint", 0.1)
    t0 = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    watch.say(f"kill -9 task {victim['task']}'s ablate (trial {victim['hash']}, MLflow at step "
              f"{victim['logged']}, checkpoint at step {STEPS * len(victim['epochs'])})")
    return {**victim, **_takeover(watch, victim, victim["task"], t0)}


def _takeover(watch: Watch, victim: dict, task: str, t0: float) -> dict:
    """Seconds from the fault until another task claims the trial, and until that task trains past
    the step the trial had reached (its ``step`` when claimed: the checkpoint after a graceful
    stop, the last heartbeat's after a kill)."""
    h = victim["hash"]
    free_s = []  # when the trial became claimable: handed back (scancel) or its lease expired (kill)

    def claimed():
        run = watch.runs()[h]
        if not free_s and (run["status"] == "interrupted" or (run["lease_expires"] or 0) < time.time()):
            free_s.append(time.monotonic() - t0)
        if run["status"] == "running" and run["worker"] != victim["worker"]:
            return run

    run = watch.wait(claimed, 120, f"trial {h} taken over", 0.1)
    claimed_s = time.monotonic() - t0
    new_task = task_of(run["worker"])[1]
    assert new_task != task, f"trial {h} was taken over by the task it was taken from ({task})"
    watch.say(f"trial {h} claimable after {free_s[0] if free_s else claimed_s:.1f} s, "
              f"claimed by task {new_task} after {claimed_s:.1f} s")
    watch.wait(lambda: watch.runs()[h]["step"] > run["step"], 120, f"trial {h} training again", 0.1)
    resumed_s = time.monotonic() - t0
    watch.say(f"trial {h} training past step {run['step']} after {resumed_s:.1f} s")
    return {"free_s": free_s[0] if free_s else claimed_s, "claimed_s": claimed_s, "resumed_s": resumed_s,
            "new_task": new_task, "step": run["step"]}


def _check_tasks(watch: Watch, scancelled: dict, killed: dict) -> None:
    """The cancelled task CANCELLED, the killed one FAILED on SIGKILL, the others exit 0."""
    tasks = watch.slurm.tasks(watch.job)
    assert sorted(tasks) == ["0", "1", "2"], tasks
    states = {t: (f["JobState"], f["ExitCode"]) for t, f in tasks.items()}
    assert states.pop(scancelled["task"])[0] == "CANCELLED", states
    assert states.pop(killed["task"]) == ("FAILED", "0:9"), states
    assert all(state == ("COMPLETED", "0:0") for state in states.values()), states


def _check_store(watch: Watch, victims: list[dict]) -> None:
    """Every trial done, trained once: one attempt, or two for a victim whose resume kept the
    steps stored before its fault (a restart from scratch would rewrite them)."""
    runs = watch.runs()
    assert len(runs) == len(LRS) and {r["status"] for r in runs.values()} == {"done"}, \
        {h: (r["status"], r["error"]) for h, r in runs.items()}
    assert {h: r["attempts"] for h, r in runs.items()} == {h: 2 if h in {v["hash"] for v in victims} else 1
                                                            for h in runs}
    for h in runs:
        assert [s[0] for s in watch.steps(h)] == list(range(1, STEPS * EPOCHS + 1)), f"steps of {h}"
        assert watch.epochs(h) == list(range(1, EPOCHS + 1)), f"epochs of {h}"
    for victim in victims:
        assert victim["steps_before"] and len(victim["steps_before"]) >= STEPS
        after = watch.steps(victim["hash"])
        assert after[:STEPS] == victim["steps_before"][:STEPS], f"{victim['hash']} was not resumed from its checkpoint"
        assert runs[victim["hash"]]["tracking_run_id"] == victim["tracking_run_id"]


def _check_mlflow(watch: Watch, victims: list[dict]) -> None:
    """One FINISHED run per trial, each step and each epoch logged once, and the sample image
    served by the tracking server (its proxied store: nothing under the workspace)."""
    server, runs = watch.server, watch.runs()
    mlflow_runs = [r for r in server.runs(EXPERIMENT) if r["tags"].get("ablate.kind") != "report"]
    by_hash = {}
    for run in mlflow_runs:
        by_hash.setdefault(run["tags"]["config_hash"], []).append(run)
    assert sorted(by_hash) == sorted(runs) and all(len(v) == 1 for v in by_hash.values()), \
        {h: [r["info"]["run_id"] for r in v] for h, v in by_hash.items()}
    for h, (run, ) in by_hash.items():
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED" and run_id == runs[h]["tracking_run_id"], run["info"]
        assert server.metric_steps(run_id, "loss") == list(range(1, STEPS * EPOCHS + 1)), f"loss steps of {h}"
        assert server.metric_steps(run_id, "grader") == [STEPS * e for e in range(1, EPOCHS + 1)], f"graders of {h}"
    exp = server.api("experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:"), exp
    for victim in victims:  # artifacts of a resumed trial too
        (run, ) = by_hash[victim["hash"]]
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), run["info"]
        png = server.artifact(run["info"]["run_id"], "samples/samples.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert list(server.artifacts.rglob("samples.png")) and not (watch.workspace / "mlartifacts").exists()


def _check_read_commands(watch: Watch, env: dict, study: Path, workspace: Path, kit) -> None:
    """``ablate status`` / ``results`` / ``report`` from here against the shared stores (the
    URLs from the environment, the password from PGPASSFILE); the report goes to the server."""
    def ablate(*args):
        done = kit.run_cli(*args, study, "--profile", "tiny", "--workspace", workspace, cwd=study.parent, env=env,
                           timeout=180)
        assert done.returncode == 0, f"ablate {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    lines = ablate("status").splitlines()
    header = next(ln for ln in lines if "┃" in ln and "done" in ln).split("┃")[1:-1]
    row = next(ln for ln in lines if ln.startswith("│ lr ")).split("│")[1:-1]
    assert dict(zip((c.strip() for c in header), (c.strip() for c in row)))["done"] == str(len(LRS)), lines
    results = json.loads(ablate("results", "--format", "json"))
    assert len(results) == len(LRS) and {r["status"] for r in results} == {"done"}, results
    ablate("report")
    assert (workspace / "report" / "report.md").is_file()
    (report_run, ) = [r for r in watch.server.runs(EXPERIMENT) if r["tags"].get("ablate.kind") == "report"]
    assert b"#" in watch.server.artifact(report_run["info"]["run_id"], "report.md")

"""A throwaway single-node Slurm cluster for tests: munge, slurmctld and slurmd on 127.0.0.1.

Everything lives in one temporary directory: a generated munge key and socket, ``slurm.conf``
(the node's CPUs and memory as ``slurmd -C`` reads them, free ports, no accounting, no cgroups:
``proctrack/linuxproc``, ``task/none``), the controller's state and slurmd's spool. The three
daemons run in the foreground as children of the test (``-F`` / ``-D``), so their PIDs are known
and teardown ends exactly them: first every job submitted through :meth:`SlurmCluster.sbatch` is
cancelled and waited for (Slurm's own SIGTERM, then SIGKILL after ``KillWait``), then slurmd,
slurmctld and munged are stopped by PID.

Client commands find the cluster through ``SLURM_CONF`` (:meth:`SlurmCluster.env`); jobs run as
root with the submitting environment. Where the binaries (Debian: ``slurm-wlm``, ``munge``) are
missing or the tests do not run as root (slurmd starts jobs as their submitting user), the tests
that need it are skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pytest

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
INSTALL_HINT = "bash scripts/install-test-engines.sh installs them (Debian: slurm-wlm, munge)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> str:
    """``CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..``
    of this machine, as ``slurmd -C`` reports it (a node line that disagrees is drained)."""
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("NodeName=")), "")
    fields = [f for f in line.split() if f.split("=", 1)[0] in
              ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")]
    assert fields, f"slurmd -C gave no node line:\n{done.stdout}\n{done.stderr}"
    return " ".join(fields)


class SlurmCluster:
    """A running cluster: ``env()`` for client commands, ``sbatch`` remembers what to cancel."""

    def __init__(self, root: Path, conf: Path):
        self.root, self.conf = root, conf
        self.jobs: list[str] = []

    def env(self, base: dict | None = None) -> dict:
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done

    def sbatch(self, *args: str, env: dict, cwd: Path) -> str:
        """Submit (``sbatch --parsable ARGS``) with ``env`` as the job's environment; the job id."""
        done = subprocess.run(["sbatch", "--parsable", *args], env=self.env(env), cwd=cwd, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"sbatch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        job = done.stdout.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def tasks(self, job: str) -> dict[str, dict]:
        """``{task id: scontrol's fields}`` of an array job's tasks (finished ones stay listed for
        MinJobAge, 300 s), e.g. ``JobState``, ``ExitCode``, ``Reason``."""
        done = self.run("scontrol", "show", "job", "-o", job, check=False)
        tasks = {}
        for line in done.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" in fields:
                tasks[fields.get("ArrayTaskId", fields["JobId"])] = fields
        return tasks

    def queued(self, job: str) -> list[str]:
        """Lines ``<task> <state>`` of the job's tasks still pending or running."""
        done = self.run("squeue", "-h", "-r", "-j", job, "-o", "%K %T", check=False)
        return [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]

    def wait_gone(self, job: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queued(job):
                return True
            time.sleep(0.5)
        return False


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def _daemon(stack: ExitStack, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start a foreground daemon; on the way out SIGTERM it by PID (SIGKILL after 20 s)."""
    out = stack.enter_context(open(log, "ab"))
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    return proc


@contextmanager
def single_node_slurm() -> Iterator[SlurmCluster]:
    """Start the cluster for the ``with`` block (``pytest.skip`` where it cannot run); tear it
    down by PID afterwards, cancelling the jobs submitted through it first."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm/munge not installed (missing {', '.join(missing)}); {INSTALL_HINT}")
    if os.geteuid() != 0:
        pytest.skip("a throwaway Slurm cluster needs root (slurmd starts each job as its submitting user)")
    hardware = node_hardware()
    root = Path(tempfile.mkdtemp(prefix="ablate-slurm-"))
    os.chmod(root, 0o711)  # munged: the socket's directory must be searchable by all
    key, sock = root / "munge.key", root / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=ablatetest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    cluster = SlurmCluster(root, conf)
    env = cluster.env()
    logs = [root / "munged.log", root / "slurmctld.log", root / "slurmd.log", root / "daemons.out"]
    try:
        with ExitStack() as stack:
            _daemon(stack, ["munged", "-F", f"--socket={sock}", f"--key-file={key}", f"--log-file={logs[0]}",
                            f"--pid-file={root / 'munged.pid'}", f"--seed-file={root / 'munged.seed'}"],
                    logs[3], env)
            _wait(lambda: subprocess.run(["munge", "-n", f"--socket={sock}"], capture_output=True).returncode == 0,
                  30, "munged", logs)
            _daemon(stack, ["slurmctld", "-D", "-i", "-f", str(conf)], logs[3], env)
            _wait(lambda: "UP" in cluster.run("scontrol", "ping", check=False).stdout, 60, "slurmctld", logs)
            _daemon(stack, ["slurmd", "-D", "-N", "localhost", "-f", str(conf)], logs[3], env)
            _wait(lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle", 60,
                  "the node to be idle", logs)
            # Last in, first out: jobs are cancelled before the daemons stop.
            stack.callback(_cancel_jobs, cluster)
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cancel_jobs(cluster: SlurmCluster) -> None:
    for job in cluster.jobs:
        cluster.run("scancel", job, check=False)
    for job in cluster.jobs:
        cluster.wait_gone(job, timeout=60)  # KillWait (30 s) after the SIGTERM at most

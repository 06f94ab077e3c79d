"""A throwaway PostgreSQL cluster for tests (the "many machines" store), shared by the store
conformance suite, the worker tests, the tracker conformance suite and the Slurm test through the
session-scoped ``pg_cluster`` fixture of ``tests/runner/conftest.py``.

``initdb`` with trust auth into a temporary directory, ``pg_ctl start`` on 127.0.0.1 and a free
port, durability off; removed afterwards. Where the server binaries, the ``postgres`` system user
(needed when the tests run as root: initdb refuses root) or psycopg2 are missing, the tests that
need it are skipped with the reason.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

_names = itertools.count()


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A throwaway cluster; ``url(db)`` names a database in it, ``createdb`` makes one."""

    def __init__(self, port: int):
        self.port = port

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{dbname}"

    def fresh_db(self, prefix: str = "db") -> str:
        """A new empty database with a unique name: one per test."""
        return self.createdb(f"{prefix}_{os.getpid()}_{next(_names)}")

    def createdb(self, dbname: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        return self.url(dbname)


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """Start a cluster for the ``with`` block (``pytest.skip`` where it cannot run), then remove it."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary, in the dev extra)")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
    owner = None
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as 'postgres'
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' system user to own the cluster")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and 'runuser' is missing (needed to run initdb as 'postgres')")
        prefix = [runuser, "-u", "postgres", "--"]

    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))  # under /tmp: reachable by 'postgres'
    data, log = root / "data", root / "server.log"
    started = False

    def run(args, **kw):
        return subprocess.run(prefix + [str(a) for a in args], cwd=root, capture_output=True, text=True,
                              timeout=120, **kw)

    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chmod(root, 0o700)
        done = run([initdb, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                    "--no-sync"])
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        for _attempt in range(3):  # a free port may be taken between probing and binding
            port = _free_port()
            # A throwaway server: durability off (fsync, synchronous_commit) like SQLite's
            # synchronous=NORMAL in WAL mode; enough connections for 8 workers x (pool + Optuna).
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
            done = run([pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start"])
            if done.returncode == 0:
                started = True
                break
        assert started, f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n" + (
            log.read_text() if log.exists() else "")
        yield PgCluster(port)
    finally:
        if started:
            run([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"])
        shutil.rmtree(root, ignore_errors=True)

"""A fleet of worker processes on one workspace: each started as ``ablate run --workers N`` starts
a worker (the scheduler's entry point), but on its own, as on separate machines. Shared by
bench/concurrency.py (how many workers one SQLite workspace takes) and the fault tests
(tests/faults/fault_helpers.py: workers to kill, fleets to audit); each audits the stores itself.

Imported as ``fleet`` by the benches (their directory is on ``sys.path``) and as ``bench.fleet``
by the tests (the repository root is); it imports nothing from ``tests/``.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def worker_main(study_file: str, workspace: str, worker_id: str, lease_s: float, poll_s: float,
                log_file: Optional[str] = None, messages=None) -> None:
    """A worker process exactly as ``ablate run --workers N`` starts one, with its warnings (a
    retried or dropped MLflow write, a lost lease, "database is locked") in ``log_file``.

    Exit codes: 0 the chain is done, 3 interrupted, 2 bad input, 4 stopped (full disk); an
    unexpected exception exits 1 with its traceback in ``log_file``."""
    if log_file:
        logging.basicConfig(filename=log_file, level=logging.WARNING,
                            format=f"%(asctime)s {worker_id} %(name)s %(levelname)s %(message)s")
    from runner.orchestrate.scheduler import _worker_process
    from runner.orchestrate.worker import WorkerOptions

    options = WorkerOptions(worker_id=worker_id, lease_s=lease_s, poll_s=poll_s)
    try:
        _worker_process(study_file, None, workspace, None, None, None, options, messages)
    except SystemExit:
        raise
    except BaseException:
        logging.getLogger("fleet").exception("worker %s crashed", worker_id)
        raise


@dataclass
class FleetRun:
    """What the processes did: seconds from the first start to the last exit, exit codes, the
    names of those still alive at the timeout (killed then), their log files concatenated."""

    wall_s: float
    exit_codes: list
    hung: list[str]
    log: str


def run_workers(study_file: Path, workspace: Path, workdir: Path, *, workers: int, lease_s: float,
                poll_s: float = 0.2, start_method: str = "spawn", timeout_s: float = 600.0) -> FleetRun:
    """Start ``workers`` :func:`worker_main` processes on ``workspace`` (prepared already, as
    ``ablate run`` prepares it), logging to ``<workdir>/w<i>.log``; wait for all of them, killing
    whatever still runs after ``timeout_s``."""
    context = multiprocessing.get_context(start_method)
    started = time.perf_counter()
    procs = [context.Process(target=worker_main, name=f"fleet-{i}", args=(
        str(study_file), str(workspace), f"fleet-w{i}", lease_s, poll_s, str(Path(workdir) / f"w{i}.log")))
        for i in range(workers)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(deadline - time.monotonic(), 1))
    finally:
        hung = [p.name for p in procs if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    wall = time.perf_counter() - started
    logs = "".join(f.read_text() for f in sorted(Path(workdir).glob("w*.log")))
    return FleetRun(wall, [p.exitcode for p in procs], hung, logs)

"""``ablate run``: start the workers, show progress, turn the outcome into an exit code.

One worker process per GPU slot (``--gpus 0,1`` x ``--trials-per-gpu K``) or ``--workers N`` on
the CPU; a single CPU worker runs in this process. Workers pull trials from the result store, so
a GPU never idles while any trial is ready, and more workers on other machines can join the same
database (PostgreSQL) at any time.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ablations.errors import InputError
from runner.orchestrate.faults import RunStopped, failure_reason, safe
from runner.orchestrate.session import Session
from runner.orchestrate.walk import materialize, studies_in_scope
from runner.orchestrate.worker import StopFlag, WorkerOptions, install_signal_handlers, run_worker


@dataclass
class RunOutcome:
    """How a run ended. The caller prints ``states`` (the chain as the run left it) and then
    ``stops``, and raises ``error`` (bad input: exit 2) if set; else exits with ``exit_code``."""

    exit_code: int
    done: int
    failed: int
    interrupted: bool
    states: list = field(default_factory=list)
    stops: list[str] = field(default_factory=list)  # why the run stopped: a full disk, dead workers
    error: Optional[str] = None                      # a study whose cells cannot be built (exit 2)


def parse_gpus(gpus: Optional[str]) -> Optional[list[int]]:
    if gpus is None:
        return None
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip() != ""]
    except ValueError:
        raise InputError(f"--gpus {gpus!r}: expected comma-separated GPU ids such as 0,1") from None
    if not ids or any(i < 0 for i in ids):
        raise InputError(f"--gpus {gpus!r}: expected comma-separated GPU ids such as 0,1")
    return ids


#: CPU worker processes of one ``ablate run`` (``--workers``). Each is a process of about 500 MB
#: (torch, mlflow, the model) with its own connections to the stores; 32 were measured to share
#: one SQLite workspace (bench/concurrency.py). 64 leaves room for big machines; more is a typo
#: that would start a thousand processes and run the machine out of memory.
MAX_WORKERS = 64
MAX_TRIALS_PER_GPU = 16  # concurrent trials on one GPU: more only splits its memory and time


def check_worker_counts(workers: Optional[int], trials_per_gpu: int) -> None:
    """``--workers`` in 1..MAX_WORKERS and ``--trials-per-gpu`` in 1..MAX_TRIALS_PER_GPU."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers {workers}: expected 1 to {MAX_WORKERS} worker processes "
                         "(each is a process of about 500 MB; to use more machines, start "
                         "`ablate run` on each of them against one database)")
    if not 1 <= trials_per_gpu <= MAX_TRIALS_PER_GPU:
        raise InputError(f"--trials-per-gpu {trials_per_gpu}: expected 1 to {MAX_TRIALS_PER_GPU}")


def worker_slots(gpus: Optional[list[int]], workers: Optional[int], trials_per_gpu: int) -> list[Optional[str]]:
    """Device of each worker: one per GPU slot, else ``workers`` CPU workers (None = config's)."""
    check_worker_counts(workers, trials_per_gpu)
    if gpus is None and workers is None:
        import torch

        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    if gpus:
        import torch

        visible = torch.cuda.device_count()
        for g in gpus:
            if g >= visible:
                raise InputError(f"--gpus: GPU {g} is not visible (this machine shows {visible})")
        return [f"cuda:{g}" for g in gpus for _ in range(trials_per_gpu)]
    return [None] * (workers or 1)


# Exit codes of a worker process. Any other (1: an exception escaped; negative: killed by a
# signal) means it died: its runs are handed back and the run exits 1 naming it.
WORKER_DONE, WORKER_BAD_INPUT, WORKER_INTERRUPTED, WORKER_STOPPED = 0, 2, 3, 4


def _worker_process(study_file, profile, workspace, db_url, tracking_uri, optuna_storage, options,
                    messages=None, parent_pid=None):
    """Entry point of a spawned worker process. Exit 0 done, 3 interrupted, 2 bad input, 4 the
    run stopped (full disk); an escaping exception exits 1 with its traceback. The one-line
    reason of 2, 4 and 1 goes to ``messages`` as (worker id, kind, text) for the parent.

    ``parent_pid``: the ``ablate run`` process. When it dies (kill -9, OOM killer) the worker
    stops as on SIGTERM (checkpoint, ``interrupted``) instead of training the chain on alone."""
    stop = StopFlag()
    install_signal_handlers(stop)
    if parent_pid is not None:
        _stop_with_parent(parent_pid, stop)

    def tell(kind: str, text: str) -> None:
        if messages is not None:
            messages.put((options.worker_id, kind, text))

    try:
        session = Session.open(study_file, profile=profile, workspace=workspace, db_url=db_url,
                               tracking_uri=tracking_uri, optuna_storage=optuna_storage)
        summary = run_worker(session, options, stop)
    except InputError as exc:
        tell("input", str(exc))
        sys.exit(WORKER_BAD_INPUT)
    except RunStopped as exc:
        tell("stop", str(exc))
        sys.exit(WORKER_STOPPED)
    except KeyboardInterrupt:  # a second Ctrl-C: the trial was handed back, as on the first
        sys.exit(WORKER_INTERRUPTED)
    except SystemExit:
        raise
    except BaseException as exc:  # said in one line to the parent, then the traceback
        tell("died", failure_reason(exc))
        raise
    sys.exit(WORKER_INTERRUPTED if summary.interrupted else WORKER_DONE)


def _stop_with_parent(parent_pid: int, stop: StopFlag) -> None:
    """Set ``stop`` when ``parent_pid`` is no longer this process's parent (it died and the
    process was re-parented). Linux: ``PR_SET_PDEATHSIG`` delivers SIGTERM at once (the
    graceful-stop handler); everywhere: a thread checks ``os.getppid()`` every second, which
    also catches a parent that died before the prctl call."""
    import os

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # no libc prctl: the thread below is enough

    def watch() -> None:
        while os.getppid() == parent_pid:
            if stop.event.wait(1.0):
                return
        stop.set("the ablate run process died")

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_plan(session: Session, *, only: Optional[list[str]] = None, workers: Optional[int] = None,
             gpus: Optional[str] = None, trials_per_gpu: int = 1, retry_failed: bool = False,
             lease_s: float = 120.0, show_progress: bool = True, poll_s: float = 1.0) -> RunOutcome:
    """Run every pending trial in scope. Optuna's storage is ``session.optuna_storage``: pass
    ``--optuna-storage`` to :meth:`Session.open`, which checks it is not the result store."""
    scope = studies_in_scope(session, only)
    gpu_ids = parse_gpus(gpus)
    states = materialize(session, scope)
    if retry_failed:
        session.store.reset_failed([s.study_id for s in states if s.study_id is not None])
    elif all(s.finished or s.blocked_by for s in states):
        # Nothing to train: answer without importing torch or starting workers.
        return _outcome(session, scope, interrupted=False)
    slots = worker_slots(gpu_ids, workers, trials_per_gpu)
    prepare_workspace(session)

    from runner.orchestrate.progress import ProgressView

    view = ProgressView(session, scope, slots=len(slots), live=show_progress)
    stop = StopFlag()
    interrupted, stops = False, []
    view.start()
    try:
        if len(slots) == 1 and slots[0] is None:
            install_signal_handlers(stop)
            options = WorkerOptions(lease_s=lease_s, poll_s=poll_s, only=only)
            try:
                interrupted = run_worker(session, options, stop).interrupted
            except RunStopped as exc:
                stops.append(str(exc))
        else:
            interrupted, stops = _run_processes(session, slots, only, lease_s, poll_s)
    finally:
        view.stop()
    return _outcome(session, scope, interrupted, stops)


def prepare_workspace(session: Session) -> None:
    """Create the tracker's store and experiment, and Optuna's tables, once, before any worker
    starts.

    MLflow builds a fresh SQLite store by running its schema migrations on first use, and those
    are not safe from several processes at once (8 workers on a new workspace died with "table
    ... already exists" / alembic "expected to match one row"), nor from a kill. This process does
    it first, under a lock in the workspace, so two ``ablate run`` started together on a new
    workspace take turns (the tracker builds a workspace store in a temporary file and renames it
    into place, and serialises a shared PostgreSQL store across machines itself: see
    :meth:`runner.tracking.Tracker.prepare`). Optuna's first CREATE races the same way.
    """
    from runner.locks import exclusive_lock

    with exclusive_lock(session.workspace / ".prepare.lock"):
        if any(spec.kind == "search" for spec in session.plan.studies):
            _prepare_optuna(session)
        session.tracker().prepare()


def _prepare_optuna(session: Session) -> None:
    """Optuna's tables: a workspace SQLite file is built in a temporary file and renamed into
    place (a kill leaves none half-made); a server or a URL that cannot be used is bad input."""
    from runner.urls import store_error
    from runner.sqlite_files import check_store_file, create_atomically, sqlite_path, sqlite_url
    from runner.store import prepare_optuna_storage

    url = session.optuna_storage
    try:
        path = sqlite_path(url) if url.startswith("sqlite") else None
        if path is not None and check_store_file(path, "optuna", session.workspace) == "new":
            create_atomically(path, lambda tmp: prepare_optuna_storage(sqlite_url(tmp)))
        else:
            prepare_optuna_storage(url)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad URL, no driver: bad input
        raise store_error("--optuna-storage", url, exc, "cannot open Optuna's storage") from None


def _run_processes(session: Session, slots: list[Optional[str]], only, lease_s: float,
                   poll_s: float) -> tuple[bool, list[str]]:
    """Run one worker process per slot until all have exited: (interrupted, one-line reasons the
    run stopped: full disk, dead workers). Raises InputError for bad input a worker met.

    A worker that exits, however it exits, holds no run afterwards: whatever it still holds
    (it died, or its own hand-back could not be written) is marked ``interrupted`` with the
    reason at once and its tracker run ended KILLED, so the others need not wait for the lease."""
    import os

    context = multiprocessing.get_context("spawn")
    messages = context.SimpleQueue()
    processes, worker_ids = [], []
    for index, device in enumerate(slots):
        options = WorkerOptions(device=device, lease_s=lease_s, poll_s=poll_s, only=only)
        options.worker_id = f"{options.worker_id}/w{index}"
        process = context.Process(target=_worker_process, name=f"ablate-worker-{index}", args=(
            str(session.study_file), session.plan.profile, str(session.workspace), session.store.url,
            session.tracking_uri, session.optuna_storage, options, messages, os.getpid()))
        process.start()
        processes.append(process)
        worker_ids.append(options.worker_id)

    interrupted = threading.Event()

    def forward(signum, _frame):
        interrupted.set()
        for p in processes:
            if p.is_alive():
                p.terminate() if signum == signal.SIGTERM else _send(p, signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    said: dict[str, tuple[str, str]] = {}  # worker id -> (kind, text) it sent before exiting
    ended: set[int] = set()
    stopping = False
    while len(ended) < len(processes):
        for index, p in enumerate(processes):
            p.join(0.2)
            if p.exitcode is None or index in ended:
                continue
            ended.add(index)
            while not messages.empty():
                wid, kind, text = messages.get()
                said[wid] = (kind, text)
            if p.exitcode not in (WORKER_DONE, WORKER_BAD_INPUT, WORKER_INTERRUPTED, WORKER_STOPPED):
                said[worker_ids[index]] = ("died", f"worker w{index} (pid {p.pid}) died: "
                                                   f"{_how_it_died(p.exitcode, said.get(worker_ids[index]))}")
            _hand_back_runs_of(session, worker_ids[index], said.get(worker_ids[index]))
            if p.exitcode in (WORKER_BAD_INPUT, WORKER_STOPPED) and not stopping:
                stopping = True  # the others checkpoint and stop too
                for other in processes:
                    if other.is_alive():
                        _send(other, signal.SIGINT)
    bad_input = [text for kind, text in said.values() if kind == "input"]
    if bad_input:
        raise InputError(bad_input[0])
    stops = [text for kind, text in said.values() if kind in ("stop", "died")]
    return interrupted.is_set() or any(p.exitcode == WORKER_INTERRUPTED for p in processes), stops


def _how_it_died(exitcode: int, said: Optional[tuple[str, str]]) -> str:
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    if said is not None and said[0] == "died":
        return said[1]  # the exception that escaped, in one line (its traceback is above)
    return f"exit code {exitcode}"


def _hand_back_runs_of(session: Session, worker_id: str, said: Optional[tuple[str, str]]) -> None:
    """Hand back what an exited worker still holds (best effort: the store may be unreachable or
    the disk full; then the lease expires as after a kill -9 of the whole run)."""
    from runner.orchestrate.trial import end_tracking_run

    reason = said[1] if said is not None else "its worker exited while holding it"
    try:
        held = session.store.hand_back_runs_of(worker_id, reason)
    except Exception as exc:  # noqa: BLE001
        print(f"ablate: could not hand back the trials of worker {worker_id}: {exc}", file=sys.stderr)
        return
    for run in held:
        safe(lambda: end_tracking_run(session, run.hash))


def _send(process, signum) -> None:
    import os

    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        pass


def _outcome(session: Session, scope, interrupted: bool, stops: Sequence[str] = ()) -> RunOutcome:
    """The exit code: 1 when the run stopped (a full disk, a dead worker), else 130 interrupted, 1
    some trial failed, 0 done. A study whose cells could not be built (an error that shows only
    once a winner is known) stopped only itself and the studies after it: everything else ran,
    and the run ends with that study's message (exit 2)."""
    states = materialize(session, scope)
    statuses = [s for st in states for r in st.results for s in r.statuses]
    done, failed = statuses.count("done"), statuses.count("failed")
    code = 1 if stops else 130 if interrupted else (1 if failed else 0)
    broken = [s.error for s in states if s.error]
    error = None
    if broken and not interrupted and not stops:
        more = f" (and {len(broken) - 1} more studies: see ablate status)" if len(broken) > 1 else ""
        error = broken[0] + more
    return RunOutcome(exit_code=code, done=done, failed=failed, interrupted=interrupted, states=states,
                      stops=list(stops), error=error)

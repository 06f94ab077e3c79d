"""Fixtures of the fault tests (helpers live in fault_helpers.py, fakes in fault_fakes.py)."""
import multiprocessing
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (str(HERE.parents[1]), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from fault_helpers import PRELOAD  # noqa: E402


@pytest.fixture
def restore_signals():
    """In-process ``ablate run`` installs SIGINT/SIGTERM handlers: put pytest's back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def forkserver():
    """A multiprocessing context whose processes fork from a server that imported ablate, torch
    and mlflow once (fresh, single-threaded processes like 'spawn', without the import cost)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context

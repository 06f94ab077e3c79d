"""Fixtures of the fault tests (helpers live in fault_helpers.py; the fake task in tests/support)."""
import multiprocessing

import pytest

from tests.faults.fault_helpers import PRELOAD


@pytest.fixture(scope="session")
def forkserver():
    """A multiprocessing context whose processes fork from a server that imported ablate, torch,
    mlflow and optuna once (fresh, single-threaded processes like 'spawn', without the import cost)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context

"""runner.locks.exclusive_lock: one holder at a time across processes; a killed holder frees it."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

from runner.locks import exclusive_lock


def _hold(path, held, release):
    with exclusive_lock(path):
        held.set()
        release.wait(30)


def _try_take(path, taken):
    with exclusive_lock(path):
        taken.set()


def test_second_process_waits_for_the_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    held, release, taken = ctx.Event(), ctx.Event(), ctx.Event()
    lock = tmp_path / "ws" / ".prepare.lock"
    holder = ctx.Process(target=_hold, args=(lock, held, release))
    holder.start()
    assert held.wait(30)
    waiter = ctx.Process(target=_try_take, args=(lock, taken))
    waiter.start()
    assert not taken.wait(1.0)  # blocked while the holder has it
    release.set()
    assert taken.wait(30)  # and gets it once released
    holder.join(30)
    waiter.join(30)
    assert holder.exitcode == 0 and waiter.exitcode == 0


def test_a_killed_holder_releases_the_lock(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    lock = tmp_path / ".prepare.lock"
    holder = ctx.Process(target=_hold, args=(lock, held, release))
    holder.start()
    assert held.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    started = time.monotonic()
    with exclusive_lock(lock):  # would block forever if the dead holder kept it
        pass
    assert lock.exists()
    print(f"taken {time.monotonic() - started:.3f}s after the holder was killed")

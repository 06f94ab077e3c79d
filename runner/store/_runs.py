"""Runs: claimed with one conditional UPDATE, held by a lease, finished with their final metrics.

A worker's every write to a run it trains is conditional on still holding it (``worker`` = it,
``status`` running): once its lease expired and another worker took the run over, the takeover
changed ``worker`` in the same UPDATE that claimed it, so the old worker's writes change nothing
and say so (False).
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional, Sequence

from sqlalchemy import delete, func, insert, select, update

from runner.store._rows import chunks, metric_rows, run_columns, run_records
from runner.store._tables import run_metrics, runs, studies, trials
from runner.store.records import ClaimedRun, RunRecord

FINISHED_AS = ("done", "failed", "pruned", "interrupted")  # what finish_run moves a run to


def _claimable(now: float):
    """A run a worker may take: not started, handed back, or running on an expired lease."""
    return (runs.c.status.in_(("pending", "interrupted"))
            | ((runs.c.status == "running") & (runs.c.lease_expires < now)))


def _held_by(run_hash: str, worker: str) -> tuple:
    return runs.c.hash == run_hash, runs.c.worker == worker, runs.c.status == "running"


class RunsMixin:
    """Claims, leases and run records of :class:`runner.store.ResultStore`."""

    def claim_run(self, run_hash: str, worker: str, lease_s: float) -> Optional[ClaimedRun]:
        """Take ``run_hash`` for ``worker`` if nobody holds a live lease on it: one conditional
        UPDATE, so of many workers claiming at once exactly one wins (None for the others)."""
        def fn(conn):
            # The clock is read once the write lock is held: a claim that waited on a busy
            # database must neither see leases as live that expired meanwhile nor start its own
            # lease in the past (it would expire early and the run be trained twice).
            now = time.time()
            result = conn.execute(update(runs).where(runs.c.hash == run_hash, _claimable(now)).values(
                status="running", worker=worker, lease_expires=now + lease_s, attempts=runs.c.attempts + 1,
                error=None, started_at=func.coalesce(runs.c.started_at, now)))
            if result.rowcount != 1:
                return None
            row = conn.execute(select(runs).where(runs.c.hash == run_hash)).one()
            return ClaimedRun(hash=row.hash, task=row.task, config=json.loads(row.config_json),
                              attempts=row.attempts, tracking_run_id=row.tracking_run_id, resumed=row.attempts > 1)
        return self._write(fn)

    def claimable_runs(self, study_ids: Sequence[int]) -> list[str]:
        """Run hashes of these studies that a worker could claim now, in study/cell order, each
        once. Failed runs are not: ``ablate run --retry-failed`` makes them pending (reset_failed)."""
        now = time.time()

        def fn(conn):
            rows = conn.execute(
                select(runs.c.hash).select_from(trials.join(runs, trials.c.run_hash == runs.c.hash)
                                                .join(studies, trials.c.study_id == studies.c.id))
                .where(trials.c.study_id.in_(list(study_ids)), _claimable(now))
                .order_by(studies.c.position, trials.c.id)).all()
            return list(dict.fromkeys(h for (h,) in rows))
        return self._read(fn)

    def heartbeat(self, run_hash: str, worker: str, lease_s: float, *, epochs_done: Optional[int] = None,
                  step: Optional[int] = None) -> bool:
        """Renew the lease (and record progress). False means another worker took the run over."""
        values: dict[str, Any] = {}
        if epochs_done is not None:
            values["epochs_done"] = epochs_done
        if step is not None:
            values["step"] = step

        def fn(conn):  # the new expiry is counted from when the write lock is held
            return conn.execute(update(runs).where(*_held_by(run_hash, worker)).values(
                lease_expires=time.time() + lease_s, **values)).rowcount == 1
        return self._write(fn)

    def update_run(self, run_hash: str, **values: Any) -> None:
        """Set columns of the run (``params``, ``tracking_run_id``, ``checkpoint_path``, ``error``,
        ``device`` ...) in one UPDATE, whoever holds it (a worker writes through
        :meth:`update_own_run`); a name that is not a column is a ValueError, nothing written."""
        values = run_columns(values)
        self._write(lambda conn: conn.execute(update(runs).where(runs.c.hash == run_hash).values(**values)))

    def update_own_run(self, run_hash: str, worker: str, **values: Any) -> bool:
        """:meth:`update_run` while ``worker`` holds the run; False (nothing written) otherwise."""
        values = run_columns(values)
        return self._write(lambda conn: conn.execute(
            update(runs).where(*_held_by(run_hash, worker)).values(**values)).rowcount == 1)

    def holds(self, run_hash: str, worker: str) -> bool:
        """Does ``worker`` still hold ``run_hash``? Asked right before a write the store cannot
        make conditional (tracking, Optuna): a takeover changes ``worker`` in the same UPDATE."""
        return self._read(lambda conn: conn.execute(
            select(runs.c.hash).where(*_held_by(run_hash, worker))).first() is not None)

    def hand_back_runs_of(self, worker: str, reason: str) -> list[RunRecord]:
        """Mark every run ``worker`` still holds ``interrupted`` with ``reason`` (the worker is
        known dead: its runs need not wait for their leases to expire). One transaction; each
        UPDATE repeats the condition, so a run another worker took meanwhile is left alone.
        Returns the runs as they were."""
        held = (runs.c.worker == worker, runs.c.status == "running")

        def fn(conn):
            records = run_records(conn, conn.execute(select(runs).where(*held).order_by(runs.c.hash)).all())
            for run in records:
                conn.execute(update(runs).where(runs.c.hash == run.hash, *held).values(
                    status="interrupted", lease_expires=None, error=reason, finished_at=time.time()))
            return records
        return self._write(fn)

    def finish_run(self, run_hash: str, worker: str, status: str, *,
                   metrics: Optional[Mapping[str, float]] = None, **values: Any) -> bool:
        """Move our run to ``status`` (done/failed/pruned/interrupted) with ``values`` (columns)
        and, given ``metrics``, replace its final metric rows, all in one transaction and only
        while ``worker`` holds it: False, nothing written, once another worker took it over.
        A kill before the commit leaves the run running on its lease (taken over when it expires)."""
        if status not in FINISHED_AS:
            raise ValueError(f"finish_run: status {status!r} is not one of {', '.join(FINISHED_AS)}")
        values = run_columns(values)
        rows = metric_rows(metrics, run_hash=run_hash) if metrics is not None else None

        def fn(conn):
            if conn.execute(update(runs).where(*_held_by(run_hash, worker)).values(
                    status=status, lease_expires=None, finished_at=time.time(), **values)).rowcount != 1:
                return False
            if rows is not None:
                conn.execute(delete(run_metrics).where(run_metrics.c.run_hash == run_hash))
                if rows:
                    conn.execute(insert(run_metrics), rows)
            return True
        return self._write(fn)

    def reset_failed(self, study_ids: Sequence[int]) -> int:
        """Make failed runs of these studies pending again (``--retry-failed``) in one UPDATE;
        returns how many. Runs in any other status are not touched."""
        def fn(conn):
            hashes = select(trials.c.run_hash).where(trials.c.study_id.in_(list(study_ids)))
            return conn.execute(update(runs).where(runs.c.hash.in_(hashes), runs.c.status == "failed")
                                .values(status="pending", error=None)).rowcount
        return self._write(fn)

    def run(self, run_hash: str) -> Optional[RunRecord]:
        """The run with its final metrics; None if there is none of that hash."""
        found = self.runs([run_hash])
        return found.get(run_hash)

    def runs(self, hashes: Sequence[str]) -> dict[str, RunRecord]:
        """``{hash: run}`` of the runs among ``hashes`` that exist, with their final metrics, in
        one read."""
        def fn(conn):
            rows = [row for part in chunks(hashes)
                    for row in conn.execute(select(runs).where(runs.c.hash.in_(part)))]
            return {record.hash: record for record in run_records(conn, rows)}
        return self._read(fn)

    def done_runs(self, task: str) -> list[RunRecord]:
        """Every run of ``task`` that trained to the end: what time estimates learn from (their
        wall time and steps), whatever plan or profile they were trained for."""
        def fn(conn):
            rows = conn.execute(select(runs).where(runs.c.task == task, runs.c.status == "done")).all()
            return run_records(conn, rows)
        return self._read(fn)

"""A run's metric history: per epoch and per step, whatever names the task reports, as rows.

Writes are idempotent per key so that a resumed run can replay what a killed attempt wrote: an
epoch's (or a step's) rows replace the old ones in one transaction, and ``truncate_history`` drops
what lies past the checkpoint a run resumes from.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import delete, insert, select

from runner.store._rows import chunks, from_db, metric_rows
from runner.store._tables import epoch_metrics, step_metrics
from runner.store.records import EpochRecord, StepRecord


class MetricsMixin:
    """Epoch and step metrics of :class:`runner.store.ResultStore`."""

    def record_epoch(self, run_hash: str, epoch: int, step: int, wall_time_s: float,
                     metrics: Mapping[str, float]) -> None:
        """The epoch's metrics (one row each), replacing whatever that epoch had: a resumed epoch
        overwrites what a killed attempt wrote. One transaction: all of them or none. An epoch
        with no metrics leaves no row."""
        rows = metric_rows(metrics, run_hash=run_hash, epoch=epoch, step=step, wall_time_s=wall_time_s)

        def fn(conn):
            conn.execute(delete(epoch_metrics).where(epoch_metrics.c.run_hash == run_hash,
                                                     epoch_metrics.c.epoch == epoch))
            if rows:
                conn.execute(insert(epoch_metrics), rows)
        self._write(fn)

    def record_steps(self, run_hash: str, rows: Iterable[Any]) -> None:
        """A batch of steps in one transaction. Each row has ``.step``, ``.wall_time_s`` and
        ``.scalars`` (a mapping of name -> value); the rows of a replayed step replace the old ones."""
        by_step: dict[int, list[dict]] = {}
        for row in rows:  # a step given twice in one batch: its last row counts
            by_step[row.step] = metric_rows(row.scalars, run_hash=run_hash, step=row.step,
                                            wall_time_s=row.wall_time_s)
        if not by_step:
            return
        values = [value for step_rows in by_step.values() for value in step_rows]

        def fn(conn):
            for part in chunks(by_step):
                conn.execute(delete(step_metrics).where(step_metrics.c.run_hash == run_hash,
                                                        step_metrics.c.step.in_(part)))
            if values:
                conn.execute(insert(step_metrics), values)
        self._write(fn)

    def truncate_history(self, run_hash: str, after_step: int, after_epoch: int) -> None:
        """Drop the step and epoch rows written after the checkpoint we resume from (they will be
        redone), in one transaction."""
        def fn(conn):
            conn.execute(delete(step_metrics).where(step_metrics.c.run_hash == run_hash,
                                                    step_metrics.c.step > after_step))
            conn.execute(delete(epoch_metrics).where(epoch_metrics.c.run_hash == run_hash,
                                                     epoch_metrics.c.epoch > after_epoch))
        self._write(fn)

    def epochs(self, run_hashes: Sequence[str]) -> list[EpochRecord]:
        """The epochs of these runs, ordered by run hash and epoch, in one read."""
        def fn(conn):
            grouped: dict[tuple[str, int], list] = {}
            for part in chunks(run_hashes):
                for row in conn.execute(select(epoch_metrics).where(epoch_metrics.c.run_hash.in_(part))
                                        .order_by(epoch_metrics.c.name)):
                    grouped.setdefault((row.run_hash, row.epoch), []).append(row)
            return [EpochRecord(run_hash=h, epoch=e, step=rows[0].step, wall_time_s=rows[0].wall_time_s,
                                metrics={r.name: from_db(r.value) for r in rows})
                    for (h, e), rows in sorted(grouped.items())]
        return self._read(fn)

    def steps(self, run_hash: str) -> list[StepRecord]:
        """The run's steps, ordered by step."""
        def fn(conn):
            grouped: dict[int, list] = {}
            for row in conn.execute(select(step_metrics).where(step_metrics.c.run_hash == run_hash)
                                    .order_by(step_metrics.c.step, step_metrics.c.name)):
                grouped.setdefault(row.step, []).append(row)
            return [StepRecord(run_hash=run_hash, step=s, wall_time_s=rows[0].wall_time_s,
                               metrics={r.name: from_db(r.value) for r in rows}) for s, rows in grouped.items()]
        return self._read(fn)

    def latest_epoch_values(self, run_hashes: Sequence[str], metric: str) -> dict[str, float]:
        """``{run_hash: value}``: ``metric`` at the latest epoch that reported it, for the runs
        among ``run_hashes`` that have one (the progress display's live column)."""
        def fn(conn):
            latest: dict[str, tuple[int, float]] = {}
            for part in chunks(run_hashes):
                for row in conn.execute(select(epoch_metrics.c.run_hash, epoch_metrics.c.epoch,
                                               epoch_metrics.c.value)
                                        .where(epoch_metrics.c.run_hash.in_(part), epoch_metrics.c.name == metric)):
                    if row.epoch >= latest.get(row.run_hash, (-1, 0.0))[0]:
                        latest[row.run_hash] = (row.epoch, from_db(row.value))
            return {h: value for h, (_, value) in latest.items()}
        return self._read(fn)

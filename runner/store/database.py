"""The result database: the system of record for studies, trial cells, runs and their metrics.

SQLAlchemy Core over SQLite (WAL, in the workspace) by default, or any SQLAlchemy URL (PostgreSQL
for many machines). Three ideas keep work from being lost or repeated:

* A **run** is one training of one resolved config by one task; its primary key is the trial's
  identity hash (task and config, seed included). A **cell** is a (study, variant, seed) of a
  study that points at a run. Two studies that ask for the same config share one run: it is
  trained once, across studies and restarts.
* Runs are **claimed** with one conditional UPDATE (pending / interrupted / lease expired -> running
  for this worker). The database decides who won; a run is never trained by two workers.
* A running run holds a **lease** renewed by heartbeats. A killed worker's lease expires and any
  worker (or the next ``ablate run``) takes the run over and resumes it from its checkpoint.

Metrics are rows (name, value) per run, epoch and step: the store keeps whatever a task reports
and names none of them. Every write is one short transaction (see :mod:`runner.store._engine`);
what leaves the store is typed records (:mod:`runner.store.records`). A database of an earlier or
newer schema is refused with one line (:mod:`runner.store._schema`), never misread.
"""
from __future__ import annotations

from runner.store._cells import CellsMixin
from runner.store._engine import StoreBase
from runner.store._metrics import MetricsMixin
from runner.store._runs import RunsMixin


class ResultStore(CellsMixin, RunsMixin, MetricsMixin, StoreBase):
    """Typed access to the result database. Safe to use from many processes at once.

    ``ResultStore(url, *, retries=30, read_only=False)``; ``ResultStore.empty()`` for a workspace
    that has no result database yet."""

"""Rows into records, and metric values into and out of the database (shared by the store's parts)."""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Iterator, Mapping, Optional

from sqlalchemy import select

from runner.store._tables import run_metrics, runs
from runner.store.records import RunRecord

_IN_CHUNK = 500  # bound an IN list: SQLite allows so many variables per statement


def chunks(values: Iterable[Any]) -> Iterator[list]:
    """``values``, distinct and sorted, in lists short enough for one ``IN``."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), _IN_CHUNK):
        yield ordered[start:start + _IN_CHUNK]


def to_db(name: str, value: Any) -> Optional[float]:
    """A metric value as stored: a float; NULL for NaN (SQLite turns NaN into NULL anyway, so both
    backends keep it alike). A value that is not a number is the caller's bug, named."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r}: {value!r} is not a number") from None
    return None if math.isnan(number) else number


def from_db(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


def metric_rows(metrics: Mapping[str, Any], **key: Any) -> list[dict]:
    """One row per metric: ``key`` columns (run_hash, epoch, ...) + name + value."""
    return [dict(key, name=str(name), value=to_db(str(name), value)) for name, value in metrics.items()]


def loads(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def final_metrics(conn, hashes: Iterable[Optional[str]]) -> dict[str, dict[str, float]]:
    """``{run_hash: {name: value}}`` of the runs among ``hashes`` that have final metrics."""
    found: dict[str, dict[str, float]] = {}
    for part in chunks(h for h in hashes if h is not None):
        for row in conn.execute(select(run_metrics).where(run_metrics.c.run_hash.in_(part))
                                .order_by(run_metrics.c.run_hash, run_metrics.c.name)):
            found.setdefault(row.run_hash, {})[row.name] = from_db(row.value)
    return found


def run_records(conn, rows) -> list[RunRecord]:
    """Rows of ``runs`` as records, with their final metrics (one more read)."""
    metrics = final_metrics(conn, [r.hash for r in rows])
    return [RunRecord(hash=r.hash, task=r.task, config=json.loads(r.config_json), status=r.status,
                      worker=r.worker, attempts=r.attempts, error=r.error, wall_time_s=r.wall_time_s,
                      device=r.device, params=r.params, tracking_run_id=r.tracking_run_id,
                      epochs_done=r.epochs_done, step=r.step, metrics=metrics.get(r.hash, {}),
                      lease_expires=r.lease_expires, code_version=r.code_version,
                      data_fingerprint=r.data_fingerprint) for r in rows]


def run_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for an UPDATE of ``runs``; a name that is not one of its columns is a ValueError
    (metrics are rows: ``finish_run(metrics=...)``)."""
    unknown = sorted(set(values) - set(runs.c.keys()))
    if unknown:
        raise ValueError(f"not a column of runs: {', '.join(unknown)}")
    return dict(values)

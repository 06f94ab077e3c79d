"""Live progress of ``ablate run``, read from the result store (so it sees every worker's trials).

On a terminal: a rich live table with trials done / total and an ETA, and one line per running
trial (study, variant, epoch, step, latest grader). Elsewhere (CI, logs): one line per trial that
reaches an outcome.
"""
from __future__ import annotations

import sys
import threading
import time

from sqlalchemy import select

from ablations import StudySpec
from runner.orchestrate.session import Session
from runner.store import TERMINAL


def snapshot(session: Session, scope: list[StudySpec]) -> dict:
    """Counts per status, running trials and mean wall time of finished runs, in one read."""
    names = [s.name for s in scope]
    plan = session.plan

    def read(conn):
        cells = conn.execute(
            select(studies.c.name, trials.c.variant, trials.c.seed, runs.c.hash, runs.c.status,
                   runs.c.epochs_done, runs.c.step, runs.c.wall_time_s, runs.c.error)
            .select_from(trials.join(studies, trials.c.study_id == studies.c.id)
                         .outerjoin(runs, trials.c.run_hash == runs.c.hash))
            .where(studies.c.plan == plan.name, studies.c.profile == session.profile,
                   studies.c.name.in_(names))).all()
        running = [c.hash for c in cells if c.status == "running"]
        graders = {}
        if running:
            for row in conn.execute(select(epoch_metrics.c.run_hash, epoch_metrics.c.epoch,
                                           epoch_metrics.c.grader)
                                    .where(epoch_metrics.c.run_hash.in_(running))):
                if row.epoch >= graders.get(row.run_hash, (-1, None))[0]:
                    graders[row.run_hash] = (row.epoch, row.grader)
        return cells, graders

    cells, graders = session.store._read(read)
    return {"cells": cells, "graders": {h: g for h, (_, g) in graders.items()}}


class ProgressView:
    def __init__(self, session: Session, scope: list[StudySpec], *, slots: int, live: bool = True,
                 interval_s: float = 1.0):
        self.session, self.scope, self.slots = session, scope, slots
        self.live = live and sys.stdout.isatty()
        self.lines = live and not self.live
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ablate-progress", daemon=True)
        self._reported: set = set()
        self._started = time.time()

    def start(self) -> None:
        if self.live or self.lines:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        if self.live:
            from rich.live import Live

            with Live(self._render(), refresh_per_second=2, transient=False) as live:
                while not self._stop.wait(self.interval_s):
                    live.update(self._render())
                live.update(self._render())
        else:
            while not self._stop.wait(self.interval_s):
                self._print_new_outcomes()
            self._print_new_outcomes()

    def _print_new_outcomes(self) -> None:
        try:
            snap = snapshot(self.session, self.scope)
        except Exception:  # noqa: BLE001 - progress must never break a run
            return
        for c in snap["cells"]:
            key = (c.name, c.variant, c.seed, c.status)
            if c.status in TERMINAL and key not in self._reported:
                self._reported.add(key)
                extra = f" ({c.error})" if c.status == "failed" and c.error else ""
                print(f"[{c.status}] {c.name} / {c.variant} / seed {c.seed}{extra}", flush=True)

    def _render(self):
        from rich.table import Table

        try:
            snap = snapshot(self.session, self.scope)
        except Exception as exc:  # noqa: BLE001
            return f"(progress unavailable: {exc})"
        cells = snap["cells"]
        done = sum(c.status in TERMINAL for c in cells)
        total = len(cells)
        times = [c.wall_time_s for c in cells if c.status == "done" and c.wall_time_s]
        waiting = [s.name for s in self.scope if s.name not in {c.name for c in cells}]
        eta = ""
        if times:
            remaining = (total - done) * (sum(times) / len(times)) / max(self.slots, 1)
            eta = f", ETA {remaining / 60:.1f} min" + (" + studies not yet expanded" if waiting else "")
        table = Table(title=f"ablate: {done}/{total} trials finished{eta} "
                            f"({len(waiting)} studies waiting for a winner), elapsed "
                            f"{(time.time() - self._started) / 60:.1f} min", title_justify="left")
        for col in ("study", "variant", "seed", "epoch", "step", "grader"):
            table.add_column(col)
        for c in cells:
            if c.status == "running":
                grader = snap["graders"].get(c.hash)
                table.add_row(c.name, c.variant, str(c.seed), str(c.epochs_done), str(c.step),
                              "-" if grader is None else f"{grader:.3f}")
        return table

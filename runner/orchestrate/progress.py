"""Live progress of ``ablate run``, read from the result store (so it sees every worker's trials).

On a terminal: a rich live table with trials done / total and an ETA, and one line per running
trial (study, variant, epoch, step, the latest value of its study's objective). Elsewhere (CI, a
batch job's log): one line per trial that reaches an outcome, with the ETA, and an ``[eta]`` line
every ``eta_every_s`` when none did. The ETA is the cost preview's estimate of what is left
(:func:`runner.orchestrate.estimate.eta_line`), refreshed as trials finish.
"""
from __future__ import annotations

import sys
import threading
import time

from ablations import StudySpec
from ablations.results import TERMINAL
from runner.orchestrate.estimate import eta_line
from runner.orchestrate.session import Session


def snapshot(session: Session, scope: list[StudySpec]) -> dict:
    """Every cell of the studies in scope with its run's state, and the latest objective value
    of the running ones (two reads)."""
    cells = session.store.plan_cells(session.plan.name, session.profile, [s.name for s in scope])
    metric_of = {s.name: s.objective.metric for s in scope}
    running: dict[str, list[str]] = {}
    for c in cells:
        if c.status == "running":
            running.setdefault(metric_of[c.study], []).append(c.run_hash)
    latest: dict[str, float] = {}
    for metric, hashes in running.items():
        latest.update(session.store.latest_epoch_values(hashes, metric))
    return {"cells": cells, "latest": latest}


class ProgressView:
    def __init__(self, session: Session, scope: list[StudySpec], *, slots: int, live: bool = True,
                 interval_s: float = 1.0, eta_every_s: float = 300.0):
        self.session, self.scope, self.slots = session, scope, slots
        self.live = live and sys.stdout.isatty()
        self.lines = live and not self.live
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ablate-progress", daemon=True)
        self._reported: set = set()
        self._started = time.time()
        self.eta_every_s = eta_every_s
        self._last_line = time.monotonic()
        self._eta: tuple[float, str] = (float("-inf"), "")  # (when computed, text)

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

    def eta(self, max_age_s: float = 0.0) -> str:
        """The ETA line, recomputed when older than ``max_age_s`` (it walks the chain and reads
        the store); empty when it cannot be computed: progress must never break a run."""
        if time.monotonic() - self._eta[0] > max_age_s:
            try:
                self._eta = (time.monotonic(), eta_line(self.session, self.scope, self.slots))
            except Exception:  # noqa: BLE001
                self._eta = (time.monotonic(), "")
        return self._eta[1]

    def _print_new_outcomes(self) -> None:
        try:
            snap = snapshot(self.session, self.scope)
        except Exception:  # noqa: BLE001 - progress must never break a run
            return
        new = []
        for c in snap["cells"]:
            key = (c.study, c.variant, c.seed, c.status)
            if c.status in TERMINAL and key not in self._reported:
                self._reported.add(key)
                extra = f" ({c.error})" if c.status == "failed" and c.error else ""
                new.append(f"[{c.status}] {c.study} / {c.variant} / seed {c.seed}{extra}")
        if new or time.monotonic() - self._last_line >= self.eta_every_s:
            eta = self.eta()
            for line in new or ["[eta]"]:
                print(line + (f" -- {eta}" if eta else ""), flush=True)
            self._last_line = time.monotonic()

    def _render(self):
        from rich.table import Table

        try:
            snap = snapshot(self.session, self.scope)
        except Exception as exc:  # noqa: BLE001
            return f"(progress unavailable: {exc})"
        cells = snap["cells"]
        waiting = [s.name for s in self.scope if s.name not in {c.study for c in cells}]
        eta = self.eta(max_age_s=10.0)
        table = Table(title=f"ablate: {eta or 'progress'} ({len(waiting)} studies waiting for a winner), "
                            f"elapsed {(time.time() - self._started) / 60:.1f} min", title_justify="left")
        for col in ("study", "variant", "seed", "epoch", "step", "objective"):
            table.add_column(col)
        for c in cells:
            if c.status == "running":
                value = snap["latest"].get(c.run_hash)
                table.add_row(c.study, c.variant, str(c.seed), str(c.epochs_done), str(c.step),
                              "-" if value is None else f"{value:.3f}")
        return table

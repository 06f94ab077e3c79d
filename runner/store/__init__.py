"""The result database: studies, trial cells, runs and their metrics (see :mod:`runner.store.database`)."""
from runner.store.database import (CELL_RUN_COLUMNS, TERMINAL, Cell, ClaimedRun, ResultStore, SourceConflict,
                                   epoch_metrics, metadata, runs, sqlite_path, sqlite_url, step_losses, studies,
                                   trials)

__all__ = ["CELL_RUN_COLUMNS", "TERMINAL", "Cell", "ClaimedRun", "ResultStore", "SourceConflict", "epoch_metrics",
           "metadata", "runs", "sqlite_path", "sqlite_url", "step_losses", "studies", "trials"]

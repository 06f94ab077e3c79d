"""The result database: studies, trial cells, runs and their metrics (see :mod:`runner.store.database`)."""
from runner.store.database import (TERMINAL, ClaimedRun, ResultStore, epoch_metrics, metadata, runs,
                                   sqlite_url, step_losses, studies, trials)

__all__ = ["TERMINAL", "ClaimedRun", "ResultStore", "epoch_metrics", "metadata", "runs", "sqlite_url",
           "step_losses", "studies", "trials"]

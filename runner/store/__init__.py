"""The result database: studies, trial cells, runs and their metrics (see :mod:`runner.store.database`).

Its tables are private; everything leaves it as the typed records of :mod:`runner.store.records`."""
from runner.sqlite_files import sqlite_path, sqlite_url
from runner.store._cells import SourceConflict
from runner.store.database import ResultStore
from runner.store.optuna_storage import open_optuna_storage, prepare_optuna_storage
from runner.store.records import (RUN_STATUSES, TERMINAL, Cell, CellRecord, ClaimedRun, EpochRecord, PlanCell,
                                  RunCell, RunRecord, StepRecord, StudyRecord)

__all__ = ["RUN_STATUSES", "TERMINAL", "Cell", "CellRecord", "ClaimedRun", "EpochRecord", "PlanCell", "ResultStore",
           "RunCell", "RunRecord", "SourceConflict", "StepRecord", "StudyRecord", "open_optuna_storage",
           "prepare_optuna_storage", "sqlite_path", "sqlite_url"]

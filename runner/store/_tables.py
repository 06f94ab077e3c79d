"""The result database's tables (schema 2). Private: nothing outside ``runner.store`` imports them;
callers get typed records (:mod:`runner.store.records`), so a column can change without them.

Metrics are rows, not columns: a task reports whatever metrics it declares (and more), per epoch,
per step and at the end, each stored as ``(name, value)``. A NaN value is stored as NULL.
"""
from __future__ import annotations

from sqlalchemy import (Column, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)

SCHEMA_VERSION = 2  # ablate_meta's schema_version; 1 was the first release (metrics as columns)

metadata = MetaData()

ablate_meta = Table(
    "ablate_meta", metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

studies = Table(
    "studies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan", String(200), nullable=False),          # the study file's `name`
    Column("profile", String(100), nullable=False),
    Column("name", String(100), nullable=False),
    Column("position", Integer, nullable=False),          # order in the study file
    Column("kind", String(20), nullable=False),           # grid | variants | search
    Column("start_from", String(100)),                   # study whose winner is the base
    Column("pin_json", Text),                            # overrides pinned over the winner
    Column("pin_reason", Text),
    Column("base_json", Text, nullable=False),           # resolved base config (flat)
    Column("created_at", Float, nullable=False),
    Column("source", Text),                              # the study file that declares it (resolved path)
    UniqueConstraint("plan", "profile", "name", name="uq_study"),
)

runs = Table(
    "runs", metadata,
    Column("hash", String(32), primary_key=True),        # the trial's identity hash (task + config)
    Column("task", String(300), nullable=False),         # the task reference that trains it
    Column("config_json", Text, nullable=False),
    Column("status", String(20), nullable=False, default="pending"),  # records.RUN_STATUSES
    Column("worker", String(200)),
    Column("lease_expires", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("wall_time_s", Float),                        # training time summed over attempts
    Column("device", String(100)),
    Column("params", Integer),                           # number of trainable parameters
    Column("checkpoint_path", Text),
    Column("tracking_run_id", String(64)),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("step", Integer, nullable=False, default=0),
    # what trained it (issue 12; nullable: added to older schema-2 databases on open, NULL in
    # their rows): runner.orchestrate.provenance's code version and the task's data fingerprint
    Column("code_version", Text),
    Column("data_fingerprint", Text),
)

trials = Table(
    "trials", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("variant", String(300), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("run_hash", String(32), ForeignKey("runs.hash")),   # NULL: search cell not sampled yet
    Column("overrides_json", Text),                            # what the variant sets on the base
    Column("optuna_trial", Integer),                           # -1: claimed, being sampled
    Column("optuna_study", String(300)),                       # the Optuna study that trial is in
    Column("claimed_by", String(200)),                         # worker sampling the cell ...
    Column("claim_expires", Float),                            # ... until then (then reclaimable)
    Column("created_at", Float, nullable=False),
    UniqueConstraint("study_id", "variant", "seed", name="uq_trial_cell"),
)

run_metrics = Table(  # the final metrics of a finished run
    "run_metrics", metadata,
    Column("run_hash", String(32), ForeignKey("runs.hash"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Float),
)

epoch_metrics = Table(
    "epoch_metrics", metadata,
    Column("run_hash", String(32), ForeignKey("runs.hash"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Float),
    Column("step", Integer, nullable=False),
    Column("wall_time_s", Float, nullable=False),        # training time at the end of the epoch
)

step_metrics = Table(
    "step_metrics", metadata,
    Column("run_hash", String(32), ForeignKey("runs.hash"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Float),
    Column("wall_time_s", Float, nullable=False),
)

# What makes a database one of ablate's result databases, whatever its schema version.
CORE_TABLES = frozenset({"studies", "runs", "trials"})

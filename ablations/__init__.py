"""ablate's study-file layer: ``studies.yaml`` -> a validated, ordered plan of trials, for any task.

Public API (everything else is internal)::

    load_study_file(path, profile=None) -> StudyPlan        # .task, .objective, .studies, .base
    profile_base(plan) -> dict
    resolve_config(base, study, variant, seed) -> study.task.Config instance
    expand_study(study, base) -> list[TrialSpec]
    identity_hash(task, config, seed=None) -> str;  flat(config) -> dict
    load_task(ref=None, base_dir=None) -> Task
    make_objective(spec, goals) -> Objective;  pick_winner / runner_up / decided_by
    summarise(cells) -> list[VariantResult];  study_finished(results) -> bool
    suggest_params(search, trial) -> dict;  search_variant(params, number) -> Variant
    make_sampler(search, seed=None);  make_pruner(search)        # optuna, imported lazily

Importing this package pulls in pydantic and yaml only (never optuna, torch or a task).
"""
from typing import Any

# Names are resolved on first use: the CLI imports ``ablations.errors`` for every command, and
# ``ablate --help`` must not pay for pydantic schema construction.
_LAZY = {
    "InputError": "ablations.errors", "StudyFileError": "ablations.errors",
    "Pin": "ablations.lineage",
    "Objective": "ablations.objective", "decided_by": "ablations.objective",
    "make_objective": "ablations.objective", "pick_winner": "ablations.objective",
    "runner_up": "ablations.objective",
    "StudyPlan": "ablations.plan", "StudySpec": "ablations.plan", "TrialSpec": "ablations.plan",
    "expand_study": "ablations.plan", "flat": "ablations.plan", "identity_hash": "ablations.plan",
    "load_study_file": "ablations.plan", "profile_base": "ablations.plan",
    "resolve_config": "ablations.plan",
    "VariantResult": "ablations.results", "study_finished": "ablations.results",
    "summarise": "ablations.results",
    "SearchParam": "ablations.search", "SearchSpec": "ablations.search", "make_pruner": "ablations.search",
    "make_sampler": "ablations.search", "search_variant": "ablations.search",
    "suggest_params": "ablations.search",
    "Task": "ablations.task", "TaskError": "ablations.task", "load_task": "ablations.task",
    "Variant": "ablations.variants",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ablations' has no attribute {name!r}")


__all__ = sorted(_LAZY)

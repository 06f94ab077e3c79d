"""ablate's study-file layer: ``studies.yaml`` -> a validated, ordered plan of trials.

Public API (everything else is internal)::

    load_study_file(path, profile=None) -> StudyPlan
    profile_base(plan) -> dict
    resolve_config(base, study, variant, seed) -> TrainConfig
    expand_study(study, base) -> list[TrialSpec]
    suggest_params(search, trial) -> dict;  search_variant(params, number) -> Variant
    make_sampler(search, seed=None);  make_pruner(search)        # optuna, imported lazily

Importing this package pulls in pydantic and yaml only (never optuna or torch).
"""
from typing import Any

# Names are resolved on first use: the CLI imports ``ablations.errors`` for every command, and
# ``ablate --help`` must not pay for pydantic schema construction.
_LAZY = {
    "Pin": "ablations.chain",
    "InputError": "ablations.errors", "StudyFileError": "ablations.errors",
    "StudyPlan": "ablations.plan", "StudySpec": "ablations.plan", "TrialSpec": "ablations.plan",
    "expand_study": "ablations.plan", "load_study_file": "ablations.plan",
    "profile_base": "ablations.plan", "resolve_config": "ablations.plan",
    "ReportNumbers": "ablations.schema",
    "SearchParam": "ablations.search", "SearchSpec": "ablations.search", "make_pruner": "ablations.search",
    "make_sampler": "ablations.search", "search_variant": "ablations.search",
    "suggest_params": "ablations.search",
    "TrainConfig": "ablations.trial", "Variant": "ablations.variants",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ablations' has no attribute {name!r}")


__all__ = [
    "InputError", "Pin", "ReportNumbers", "SearchParam", "SearchSpec", "StudyFileError",
    "StudyPlan", "StudySpec", "TrainConfig", "TrialSpec", "Variant", "expand_study",
    "load_study_file", "make_pruner", "make_sampler", "profile_base", "resolve_config",
    "search_variant", "suggest_params",
]

"""ablate's study-file layer: ``studies.yaml`` -> a validated, ordered plan of trials.

Public API (everything else is internal)::

    load_study_file(path, profile=None) -> StudyPlan
    profile_base(plan) -> dict
    resolve_config(base, study, variant, seed) -> TrainConfig
    expand_study(plan, study, base) -> list[TrialSpec]
    select_winner(study, mean_grader_by_variant) -> str
    suggest_params(search, trial) -> dict;  search_variant(params, number) -> Variant
    make_sampler(search, seed=None);  make_pruner(search)        # optuna, imported lazily

Importing this package pulls in pydantic and yaml only (never optuna or torch).
"""
from ablations.chain import Pin, select_winner
from ablations.errors import InputError, StudyFileError
from ablations.plan import (StudyPlan, StudySpec, TrialSpec, expand_study, load_study_file,
                            profile_base, resolve_config)
from ablations.schema import ReportNumbers
from ablations.search import (SearchParam, SearchSpec, make_pruner, make_sampler,
                              search_variant, suggest_params)
from ablations.trial import TrainConfig
from ablations.variants import Variant

__all__ = [
    "InputError", "Pin", "ReportNumbers", "SearchParam", "SearchSpec", "StudyFileError",
    "StudyPlan", "StudySpec", "TrainConfig", "TrialSpec", "Variant", "expand_study",
    "load_study_file", "make_pruner", "make_sampler", "profile_base", "resolve_config",
    "search_variant", "select_winner", "suggest_params",
]

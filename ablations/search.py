"""Searches: studies whose variants are proposed by optuna instead of listed.

Why a module: a grid is the report's method, but some axes (the final LR, 4.5) are better
searched. A ``search:`` study names a sampler (tpe | random | grid | cmaes), a trial budget, a
space of the task's config keys and an optional pruner that watches the study's objective metric
epoch by epoch (the runner calls ``trial.report(value, epoch)`` and ``trial.should_prune()``;
Optuna's direction is the objective's goal). This module maps that description onto optuna;
optuna itself is imported only inside the functions that need it, so ``import ablations`` stays
light.

Categorical choices that optuna cannot store (lists such as a crop size) are passed to optuna as
their JSON text and decoded back by :func:`suggest_params`.

Note for drivers: optuna's GridSampler calls ``study.stop()`` once the grid is exhausted, which
raises RuntimeError outside ``study.optimize``: with ask/tell, the ``tell`` of the last grid point
raises *after* recording the trial as complete, so catch it there and stop asking.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ablations.variants import Variant

SamplerName = Literal["tpe", "random", "grid", "cmaes"]
PrunerName = Literal["none", "median", "hyperband"]
ParamType = Literal["loguniform", "uniform", "int", "categorical"]
MAX_GRID_POINTS = 10_000


@dataclass(frozen=True)
class SearchParam:
    """One axis: ``loguniform``/``uniform`` (float in [low, high], optional ``step`` for
    uniform), ``int`` (integers in [low, high] by ``step``) or ``categorical`` (``choices``)."""

    type: ParamType
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    choices: tuple = ()


@dataclass(frozen=True)
class SearchSpec:
    """What the runner needs to drive an optuna study for one ablation study."""

    sampler: SamplerName = "tpe"
    n_trials: int = 10
    space: dict = field(default_factory=dict)  # config key -> SearchParam
    pruner: PrunerName = "none"


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _encoded_choices(param: Any) -> tuple[list, bool]:
    choices = list(param.choices)
    if all(_primitive(c) for c in choices):
        return choices, False
    return [json.dumps(c, sort_keys=True) for c in choices], True


def grid_values(param: Any) -> list:
    """The finite value list of one axis (for optuna's GridSampler); ValueError if continuous.

    Works on anything with ``type/low/high/step/choices`` attributes (schema model or
    SearchParam). Expands the axis: check :func:`grid_size` against MAX_GRID_POINTS first.
    """
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
    return [param.low + i * param.step for i in range(axis_size(param))]


def axis_size(param: Any) -> int:
    """How many points :func:`grid_values` would give, counted without listing them (an int
    axis of 0..10**12 is a number here, not a list); ValueError if the axis is continuous."""
    if param.type == "categorical":
        return len(param.choices)
    if param.type == "int":
        return len(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
    if param.type == "uniform" and param.step:
        return int(round((param.high - param.low) / param.step + 1e-9)) + 1
    raise ValueError(f"a {param.type} axis without 'step' is continuous: the grid sampler "
                     "needs categorical, int or stepped uniform axes")


def grid_size(space: dict) -> int:
    size = 1
    for param in space.values():
        size *= axis_size(param)
    return size


def suggest_params(search: SearchSpec, trial: Any) -> dict:
    """Ask an ``optuna.Trial`` for one value per axis of ``search.space``; returns key -> value
    ready to be used as a variant's overrides (JSON-encoded choices decoded)."""
    params: dict = {}
    for name, p in search.space.items():
        if p.type == "loguniform":
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), log=True)
        elif p.type == "uniform":
            step = float(p.step) if p.step else None
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), step=step)
        elif p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1))
        elif p.type == "categorical":
            choices, encoded = _encoded_choices(p)
            value = trial.suggest_categorical(name, choices)
            params[name] = json.loads(value) if encoded else value
        else:  # pragma: no cover - the schema rejects other types
            raise ValueError(f"unknown search parameter type {p.type!r}")
    return params


def search_variant(params: dict, number: int) -> Variant:
    """The Variant for optuna trial ``number`` (``trial0007``), to pass to resolve_config."""
    return Variant(f"trial{number:04d}", dict(params))


def make_sampler(search: SearchSpec, seed: Optional[int] = None) -> Any:
    """An optuna sampler for ``search.sampler``, seeded for reproducibility."""
    import optuna

    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        space = {}
        for name, p in search.space.items():
            if p.type == "categorical":
                space[name] = _encoded_choices(p)[0]
            else:
                space[name] = grid_values(p)
        return optuna.samplers.GridSampler(space, seed=seed)
    if search.sampler == "cmaes":
        # needs the optional 'cmaes' package at the first sampled trial
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ValueError(f"unknown sampler {search.sampler!r}")


def make_pruner(search: SearchSpec) -> Any:
    """An optuna pruner on the intermediate objective metric (epochs are the steps)."""
    import optuna

    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    raise ValueError(f"unknown pruner {search.pruner!r}")

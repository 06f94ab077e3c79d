"""The models of a study's design: its grid, variants, search space and seeds, as a study gives
them and as a profile's trim replaces them.

Why a module: a study and a profile's trim of it (:mod:`ablations.schema`) check a design the
same way, and the design is where most of the file's rules are (a grid expands to valid configs,
variant names are unique, a search space is well-formed and, for the grid sampler, finite), so
these rules sit together, apart from the file's layout. Config keys and values are checked
against the task's Config from the validation context (:func:`ablations.checks.task_of`).
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from ablations import grid as grid_mod
from ablations import search as search_mod
from ablations import variants as variants_mod
from ablations.checks import check_config_key, check_config_keys, check_config_value, task_of
from ablations.locate import fail, relay
from ablations.seeds import normalize_seeds
from ablations.strict import StrictModel
from ablations.task import Task
from ablations.yaml_source import LocatedError


class VariantModel(StrictModel):
    name: Optional[str] = None
    set: Any = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                variants_mod.check_name(v)
            except LocatedError as exc:
                raise relay(exc) from None
        return v

    @field_validator("set")
    @classmethod
    def _set(cls, v: Any, info: ValidationInfo) -> dict:
        return check_config_keys(v, "a variant's 'set'", task_of(info))


class ParamModel(StrictModel):
    type: search_mod.ParamType
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    choices: Optional[list] = None

    @model_validator(mode="after")
    def _check(self) -> "ParamModel":
        if self.type == "categorical":
            for key in ("low", "high", "step"):
                if getattr(self, key) is not None:
                    raise fail(f"'{key}' is not used by a categorical parameter (give 'choices')", key)
            if not self.choices:
                raise fail("a categorical parameter needs a non-empty 'choices' list", "choices")
            for j, c in enumerate(self.choices):
                if c in self.choices[:j]:
                    raise fail(f"choice {c!r} is listed twice", "choices", j)
            return self
        if self.choices is not None:
            raise fail(f"'choices' is only for categorical parameters (this one is {self.type})",
                       "choices")
        for key in ("low", "high"):
            if getattr(self, key) is None:
                raise fail(f"a {self.type} parameter needs '{key}'", key)
        if self.low > self.high:
            raise fail(f"low ({self.low}) must be <= high ({self.high})", "low")
        if self.type == "loguniform":
            if self.low <= 0:
                raise fail(f"loguniform needs low > 0 (got {self.low})", "low")
            if self.step is not None:
                raise fail("'step' cannot be used with loguniform", "step")
        if self.step is not None and self.step <= 0:
            raise fail(f"step must be > 0 (got {self.step})", "step")
        if self.type == "int":
            for key in ("low", "high", "step"):
                val = getattr(self, key)
                if val is not None and not float(val).is_integer():
                    raise fail(f"an int parameter needs an integer {key} (got {val})", key)
        return self


class _SearchFields(StrictModel):
    @field_validator("space", check_fields=False)
    @classmethod
    def _space(cls, v: Optional[dict], info: ValidationInfo) -> Optional[dict]:
        if v is None:
            return v
        if not v:
            raise fail("space must name at least one config key")
        for key in v:
            check_config_key(key, task_of(info), key, what="searched")
        return v

    @field_validator("n_trials", check_fields=False)
    @classmethod
    def _n_trials(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v < 1:
            raise fail(f"n_trials must be >= 1 (got {v})")
        if v is not None and v > variants_mod.MAX_STUDY_TRIALS:
            raise fail(f"n_trials must be <= {variants_mod.MAX_STUDY_TRIALS:,} (got {v:,}): "
                       "every Optuna trial is a trial of the study")
        return v

    @model_validator(mode="after")
    def _grid_sampler(self) -> "_SearchFields":
        if getattr(self, "sampler", None) == "grid" and getattr(self, "space", None):
            for key, param in self.space.items():
                try:
                    search_mod.axis_size(param)
                except ValueError as exc:
                    raise fail(str(exc), "space", key, "type") from None
            if search_mod.grid_size(self.space) > search_mod.MAX_GRID_POINTS:
                raise fail(f"grid search space has more than {search_mod.MAX_GRID_POINTS} points",
                           "space")
        return self


class SearchModel(_SearchFields):
    sampler: search_mod.SamplerName = "tpe"
    n_trials: int
    space: dict[str, ParamModel]
    pruner: search_mod.PrunerName = "none"


class SearchPatchModel(_SearchFields):
    """A profile trim's ``search:``; completed from the study's own search when it has one."""

    sampler: Optional[search_mod.SamplerName] = None
    n_trials: Optional[int] = None
    space: Optional[dict[str, ParamModel]] = None
    pruner: Optional[search_mod.PrunerName] = None


def _check_grid(v: Any, task: Task) -> Any:
    if v is None:
        return v
    try:
        subgrids = grid_mod.check_grid(v)
    except LocatedError as exc:
        raise relay(exc) from None
    for i, sub in enumerate(subgrids):
        prefix = (i,) if isinstance(v, list) else ()
        for key, values in sub.items():
            check_config_key(key, task, *prefix, key, what="axis")
            for j, value in enumerate(values):
                check_config_value(task, key, value, (*prefix, key, j))
    try:
        grid_mod.expand_grid(v)
    except LocatedError as exc:
        raise relay(exc) from None
    return v


def _check_seeds(v: Any) -> Any:
    try:
        normalize_seeds(v)
    except LocatedError as exc:
        raise relay(exc) from None
    return v


def design_keys(model: BaseModel, keys: tuple[str, ...]) -> list[str]:
    """Which of ``keys`` (grid, variants, search, only) ``model`` gives; a study and a trim allow
    at most one."""
    return [k for k in keys if getattr(model, k) is not None]


class SeedsAndGrid(StrictModel):
    """``seeds`` and ``grid``, checked alike in a study and in a profile's trim of it."""

    seeds: Any = None
    grid: Any = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        return _check_seeds(v)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_grid(v, task_of(info))

"""The base of every study-file model: unknown keys are errors (with a suggestion, and a hint
when the key is a config key put at the wrong level), types are not coerced, floats are finite.

Why a module: the study file's models live in two modules (:mod:`ablations.schema`, the file,
its profiles and studies; :mod:`ablations.design_schema`, a study's grid, variants, search and
seeds), and both build on this one base, so every level of the file refuses the same mistakes
the same way.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from ablations.checks import PER_TRIAL_KEYS, task_of
from ablations.locate import fail, suggest


class StrictModel(BaseModel):
    """Base: unknown keys are errors (with a suggestion), types are not coerced, floats are
    finite (a search bound or a report number of .inf/.nan means nothing)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any, info: ValidationInfo) -> Any:
        fields = list(cls.model_fields)
        if not isinstance(data, dict):
            raise fail(f"expected a mapping (with keys {', '.join(fields)}), "
                       f"got {type(data).__name__} {data!r:.60}")
        for key in data:
            if key not in cls.model_fields:
                hint = ""
                if key in task_of(info).Config.model_fields and key not in PER_TRIAL_KEYS:
                    hint = f"; config keys go under {cls._config_home()}"
                raise fail(f"unknown key '{key}' (expected one of: {', '.join(fields)}){hint}",
                           key, suggestion=suggest(key, fields))
        return data

    @classmethod
    def _config_home(cls) -> str:
        return "'defaults', a profile's 'overrides', a variant's 'set' or a grid"

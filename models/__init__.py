"""Multi-task networks for the report's ablations: ``build_model(ModelConfig)``.

Kept light on purpose: the CLI imports this package lazily and torchvision (plus the rest of the
model code) is only imported when ``build_model``/``count_parameters`` are first used.
"""
from __future__ import annotations

from typing import Any

from models.config import ModelConfig

__all__ = ["ModelConfig", "build_model", "count_parameters", "EncoderWeightsError"]

_LAZY = {"build_model": "models.factory", "count_parameters": "models.factory",
         "EncoderWeightsError": "models.weights"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")

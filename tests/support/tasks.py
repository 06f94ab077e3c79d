"""A task of one's own, written beside a study file as a user would: its own Config keys and
metrics, nothing imported from ablate. Tests write it with :func:`write_task` and name it in the
study file's ``task:``."""
from __future__ import annotations

from pathlib import Path

USER_TASK = '''\
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    width: int = Field(8, ge=1, le=1024)
    learning_rate: float = Field(0.1, gt=0)
    activation: Literal["relu", "tanh"] = "relu"
    device: str = "cpu"
{seed}

metrics = {{"error": "min", "accuracy": "max", "loss": "min"}}
execution_keys = ("device",)
{fit}'''

FIT = '''

def fit(config, ctx):
    return {"error": 1.0 / config.width, "accuracy": 1.0 - 1.0 / config.width, "loss": 0.5}
'''


def write_task(directory: Path, module: str = "my_task", *, seed: bool = True,
               fit: bool = True) -> Path:
    """Write the user task as ``<directory>/<module>.py``: metrics ``error`` (min, the default
    objective: the first metric), ``accuracy`` (max), ``loss`` (min); Config keys ``width``,
    ``learning_rate``, ``activation``, ``device`` (an execution key) and, with ``seed``, ``seed``.
    Without ``fit`` it is no task."""
    path = Path(directory) / f"{module}.py"
    path.write_text(USER_TASK.format(seed="    seed: int = 0" if seed else "",
                                     fit=FIT if fit else ""))
    return path

"""``ablate train CONFIG.yaml``: one configuration of a task, outside any study.

Useful on its own (debugging a config, benchmarking) and the same path a study's trial takes:
the task's ``prepare`` then ``fit`` through a :class:`~runner.orchestrate.context.TrialContext`,
in ``<workspace>/train/<identity hash>/`` (so running it again resumes, or returns at once with
the finished result), one line per epoch on the console. No result store, no tracker.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from ablations import Task, identity_hash, load_task
from ablations.errors import InputError
from ablations.yaml_source import load_yaml, parse_yaml
from runner.orchestrate.context import (CheckpointError, Position, TrialContext, checkpoint_path,
                                        finite_metrics, read_checkpoint)
from runner.orchestrate.faults import set_aside


@dataclass(frozen=True)
class SingleResult:
    final: dict
    declared: tuple  # the task's declared metrics (what the console line shows)
    params: Optional[int]
    wall_time_s: float
    device: str
    epochs: int
    steps: int


class ConsoleRecorder:
    """The ctx's records for ``ablate train``: epochs printed, nothing stored, never a lease."""

    def __init__(self, task: Task):
        self.task = task

    def on_step(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def record_steps(self, rows: list) -> None:
        pass

    def record_epoch(self, epoch: int, step: int, wall_time_s: float, metrics: Mapping[str, float]) -> None:
        shown = "  ".join(f"{name} {metrics[name]:.3f}" for name in self.task.metrics if name in metrics)
        print(f"epoch {epoch:>3}  step {step:>6}  {shown}  {wall_time_s:.1f}s", flush=True)

    def check_lease(self) -> None:
        pass

    def lease_lost(self) -> bool:
        return False

    def log_artifact(self, path: str, artifact_path: Optional[str]) -> None:
        pass


def config_from_mapping(task: Task, data: object, doc, given: Optional[dict] = None) -> Any:
    """Validate a mapping of the task's config keys; errors name the file, line and key, or the
    ``--set KEY=VALUE`` option for a key in ``given`` (key -> the option's text)."""
    from ablations.locate import suggest

    if not isinstance(data, dict):
        raise doc.error((), f"expected a mapping of task '{task.name}' config keys")
    try:
        return task.Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            message, hint = "unknown key", suggest(loc[0], task.config_keys)
        else:
            message, hint = err["msg"] + (f" (got {err['input']!r})" if loc else ""), None
        if loc and given and loc[0] in given:
            raise InputError(f"--set {given[loc[0]]}: {message}"
                             + (f" (did you mean '{hint}'?)" if hint else "")) from None
        raise doc.error(loc, message, suggestion=hint) from None


def load_train_config(task: Task, path: Path, overrides: list[str] = ()) -> Any:
    doc = load_yaml(path)
    if doc.data is not None and not isinstance(doc.data, dict):  # before --set writes into it
        raise doc.error((), f"expected a mapping of task '{task.name}' config keys, not a {type(doc.data).__name__}")
    data = dict(doc.data or {})
    given = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        data[key.strip()] = parse_yaml(value, f"--set {key}").data
        given[key.strip()] = item
    return config_from_mapping(task, data, doc, given)


def train_config_file(path: Path, workspace: Path, overrides: list[str] = (),
                      task_name: Optional[str] = None) -> SingleResult:
    """Train the config in ``path`` (the task ``task_name``, default mtl) in ``workspace``."""
    from ablations.task import TaskError
    from runner.orchestrate.session import ensure_workspace
    from runner.orchestrate.trial import trial_device

    try:
        task = load_task(task_name, Path(path).resolve().parent)
    except TaskError as exc:
        raise InputError(f"--task: {exc}") from None
    config = load_train_config(task, Path(path), overrides)
    workspace = ensure_workspace(Path(workspace))
    run_dir = workspace / "train" / identity_hash(task, config, getattr(config, "seed", 0))
    try:
        resume = read_checkpoint(run_dir)
    except CheckpointError as error:
        set_aside(checkpoint_path(run_dir), str(error))
        resume = None
    device = trial_device(getattr(config, "device", None))
    ctx = TrialContext(run_dir=run_dir, workspace=workspace, device=device, seed=getattr(config, "seed", 0),
                       recorder=ConsoleRecorder(task), resume=resume)
    started = time.perf_counter()
    ready = task.prepare(config, ctx) if task.prepare is not None else config
    final = finite_metrics(task.fit(ready, ctx) or {}, required=tuple(task.metrics))
    params = int(task.count_parameters(config)) if task.count_parameters is not None else None
    position = ctx.position if ctx.position.step else (resume.position if resume else Position())
    return SingleResult(final=final, declared=tuple(task.metrics), params=params, wall_time_s=ctx.wall_time_s or time.perf_counter() - started,
                        device=device, epochs=position.epoch, steps=position.step)

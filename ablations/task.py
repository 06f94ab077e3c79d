"""Tasks: what trains one configuration, named by the study file's ``task:`` key.

Why a module: ablate's chain, seeds, dedup, store and report work for any model; what differs is
the config keys, the training and the metrics. A task is a plain module or object that needs no
import from ablate (duck typing, like the callables submitit or Ray Tune run):

* ``Config``: a pydantic model; its fields are the keys a study may set;
* ``metrics``: metric name -> ``"max"`` / ``"min"`` (what ``fit`` returns and its epochs log);
* ``fit(config, ctx)``: trains one config and returns its final metrics;
* optional: ``objective`` (a metric name or ``{metric, goal, tie_break}``; default: the first
  metric), ``prepare(config, ctx)`` (shared assets in ``ctx.workspace``; returns the config
  ``fit`` gets),
  ``count_parameters(config)``, ``execution_keys`` (fields that do not change results, left out of
  the identity), ``metric_labels`` (report column names), ``rehearsal_config(config)``,
  ``miniature_config(config)`` and ``cost(config)`` (below),
  ``final_weights(state)`` (what a finished trial keeps of its checkpoint's state under
  ``checkpoints: {keep: final}``: e.g. the model's weights without optimizer state; without it the
  full checkpoint is kept), ``data_fingerprint(config)`` (a short text that changes when the data
  set the config reads changes: its files' names, sizes and times, or the parameters of data a
  generator makes; computable before ``prepare``, as it is part of the identity under
  ``identity: {code: strict}``; None: not known).

``rehearsal_config(config)`` (``ablate run --rehearse``, ``--calibrate``): ``config`` shrunk to a
couple of training steps and one validation batch that runs on this machine (data or weights it
cannot find replaced by stand-ins of the same shapes); returns the config, or ``(config, notes)``
with one-line notes on what was replaced and how to fix it. A task without it is rehearsed with its
configs as they are. ``cost(config)`` (time estimates): ``(signature, steps)``, where configs of
one JSON-able ``signature`` take the same time per training step (model, input size, batch) and
``steps`` is the number of training steps (None: unknown). Without it, a trial's time is estimated
from finished runs of the same config (seed and execution keys aside).
``miniature_config(config)``: like ``rehearsal_config``, at the smallest input the task runs on,
every code path kept (model kind, losses, optimizer, data source). Why: a step's time, memory and
shapes depend on the cost signature only, so a rehearsal runs the first config of each signature as
``rehearsal_config`` gives it and the others of that signature (other learning rates, loss weights,
...) as their miniature: the same path checked in seconds instead of minutes. A task without it (or
without ``cost``) has every config rehearsed at its ``rehearsal_config`` size.

``task: mtl`` (the default) and other built-in names come from the entry-point group
``ablate.tasks``; anything else is ``package.module`` or ``package.module:object``, imported with
the study file's directory first on ``sys.path`` (a ``my_task.py`` beside ``studies.yaml`` works).
Loading a task imports its module only: the built-in ``mtl`` keeps torch out until ``fit``.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ablations.objective import GOALS, Objective, make_objective

DEFAULT_TASK = "mtl"
ENTRY_POINT_GROUP = "ablate.tasks"


class TaskError(ValueError):
    """The task reference cannot be loaded or the object is not a task (message says why)."""


@dataclass(frozen=True)
class Task:
    """A loaded, checked task. ``name`` is the reference as written (``mtl``, ``my_task``,
    ``pkg.mod:Obj``): it is part of every trial's identity, so two tasks never share a run."""

    name: str
    Config: type
    metrics: Mapping[str, str]
    objective: Objective
    fit: Callable[[Any, Any], Mapping[str, float]]
    prepare: Optional[Callable[[Any, Any], Any]] = None
    count_parameters: Optional[Callable[[Any], int]] = None
    rehearsal_config: Optional[Callable[[Any], Any]] = None
    miniature_config: Optional[Callable[[Any], Any]] = None
    cost: Optional[Callable[[Any], tuple[Any, Optional[int]]]] = None
    final_weights: Optional[Callable[[Any], Any]] = None
    data_fingerprint: Optional[Callable[[Any], Optional[str]]] = None
    execution_keys: frozenset = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def config_keys(self) -> tuple[str, ...]:
        return tuple(self.Config.model_fields)

    def label(self, metric: str) -> str:
        return self.labels.get(metric, metric)


def builtin_tasks() -> dict[str, str]:
    """Built-in task names -> ``module[:object]`` (the ``ablate.tasks`` entry points)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


_CACHE: dict[tuple[str, str], Task] = {}


def load_task(ref: Optional[str] = None, base_dir: Optional[Path] = None) -> Task:
    """The task ``ref`` (default ``mtl``); ``base_dir`` (the study file's directory) is searched
    first. Raises :class:`TaskError` with a one-line reason."""
    ref = ref or DEFAULT_TASK
    key = (ref, str(base_dir or ""))
    if key not in _CACHE:
        _CACHE[key] = _load(ref, base_dir)
    return _CACHE[key]


def _load(ref: str, base_dir: Optional[Path]) -> Task:
    target = builtin_tasks().get(ref, ref)
    module_name, _, attr = target.partition(":")
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")) \
            or (attr and not all(part.isidentifier() for part in attr.split("."))):
        raise TaskError(f"task '{ref}' is not a built-in task ({', '.join(sorted(builtin_tasks())) or 'none'}) "
                        "nor a 'package.module' or 'package.module:object' reference")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"task '{ref}': cannot import module '{module_name}' ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a user's module failing at import: say which and why
        raise TaskError(f"task '{ref}': importing '{module_name}' failed: "
                        f"{type(exc).__name__}: {exc}") from None
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskError(f"task '{ref}': module '{module_name}' has no attribute '{attr}'") from None
    return _check(ref, obj)


def _check(ref: str, obj: Any) -> Task:
    missing = [name for name in ("Config", "metrics", "fit") if not hasattr(obj, name)]
    if missing:
        raise TaskError(f"task '{ref}' lacks {', '.join(missing)} (a task provides Config, metrics "
                        "and fit(config, ctx); see the README's 'Your own task')")
    config = obj.Config
    if not (isinstance(config, type) and hasattr(config, "model_fields") and hasattr(config, "model_validate")):
        raise TaskError(f"task '{ref}': Config must be a pydantic model class")
    if not isinstance(obj.metrics, Mapping):
        raise TaskError(f"task '{ref}': metrics must be a mapping of metric names to 'max' or 'min', "
                        f"not {type(obj.metrics).__name__}")
    metrics = dict(obj.metrics)
    if not metrics:
        raise TaskError(f"task '{ref}': metrics must name at least one metric")
    for name, goal in metrics.items():
        if not isinstance(name, str) or goal not in GOALS:
            raise TaskError(f"task '{ref}': metrics must map names to 'max' or 'min' (got {name!r}: {goal!r})")
    if not callable(obj.fit):
        raise TaskError(f"task '{ref}': fit must be callable as fit(config, ctx)")
    try:
        objective = make_objective(getattr(obj, "objective", None) or next(iter(metrics)), metrics)
    except ValueError as exc:
        raise TaskError(f"task '{ref}': objective: {exc}") from None
    execution = frozenset(getattr(obj, "execution_keys", ()) or ())
    unknown = sorted(execution - set(config.model_fields))
    if unknown:
        raise TaskError(f"task '{ref}': execution_keys names unknown Config fields {unknown}")
    return Task(name=ref, Config=config, metrics=metrics, objective=objective, fit=obj.fit,
                prepare=getattr(obj, "prepare", None),
                count_parameters=getattr(obj, "count_parameters", None),
                rehearsal_config=getattr(obj, "rehearsal_config", None),
                miniature_config=getattr(obj, "miniature_config", None), cost=getattr(obj, "cost", None),
                final_weights=getattr(obj, "final_weights", None),
                data_fingerprint=getattr(obj, "data_fingerprint", None),
                execution_keys=execution, labels=dict(getattr(obj, "metric_labels", None) or {}))

"""Value checks the study file's models call: config keys and values against the task's Config,
objectives and report numbers against its metrics, and the safe names of files and studies.

Why a module: these are the checks that make a user's task as well guarded as the built-in one;
each raises :func:`ablations.locate.fail` with the sub-path of the offending element, so the
error lands on its line. The task comes from the validation context (:func:`task_of`).
"""
from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError, ValidationInfo

from ablations.locate import fail, suggest
from ablations.objective import GOALS, Objective, make_objective
from ablations.task import Task

SAFE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_SAFE_NAME = 64
PER_TRIAL_KEYS = {"seed": "the seed is set per trial from the study's 'seeds:'"}
OBJECTIVE_KEYS = ("metric", "goal", "tie_break")
REPORT_EXTRAS = ("params", "time")  # report keys beside the task's metric names
_TIME_RE = re.compile(r"^\d+:[0-5]\d$")


def task_of(info: ValidationInfo) -> Task:
    """The task whose Config the study file's keys are checked against."""
    task = (info.context or {}).get("task")
    if task is None:
        raise TypeError("study-file models are validated with context={'task': Task} "
                        "(ablations.plan.load_study_file does)")
    return task


def check_safe_name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise fail(f"{what} must be a string, not {type(value).__name__}")
    if not SAFE_NAME_RE.match(value) or len(value) > MAX_SAFE_NAME:
        raise fail(f"invalid {what} {value!r}: use lowercase letters, digits, '_' and '-', "
                   f"starting with a letter or digit (at most {MAX_SAFE_NAME} characters; names "
                   "become directory and database names, so '/', '.' and '..' are refused)")
    return value


def check_config_key(key: Any, task: Task, *path: Any, what: str = "set") -> None:
    """``key`` is a field of the task's Config that a study may vary (``what``: set, searched,
    a grid axis); unknown keys get the closest field as a suggestion."""
    if key in PER_TRIAL_KEYS:
        verb = {"set": "be set here", "searched": "be searched", "axis": "be a grid axis"}[what]
        raise fail(f"'{key}' cannot {verb}: {PER_TRIAL_KEYS[key]}", *path)
    if not isinstance(key, str) or key not in task.Config.model_fields:
        hint = suggest(key, task.config_keys)
        raise fail(f"unknown key '{key}'" + ("" if hint else f" (not a config key of task "
                                             f"'{task.name}')"), *path, suggestion=hint)


def check_config_keys(value: Any, where: str, task: Task) -> dict:
    """A mapping of the task's config keys; unknown keys get a suggestion, values are checked
    one by one against its Config (combinations are checked when variants are resolved)."""
    if not isinstance(value, dict):
        raise fail(f"{where} must be a mapping of config keys (of task '{task.name}') to values, "
                   f"not {type(value).__name__}")
    for key, val in value.items():
        check_config_key(key, task, key)
        check_config_value(task, key, val, (key,))
    return value


def check_config_value(task: Task, key: str, value: Any, path: tuple) -> None:
    """Validate one key's value in isolation (its type and range) with the task's Config."""
    try:
        task.Config.model_validate({key: value})
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"] and err["loc"][0] == key:  # the element too: augment_scale[1]
                message = err["msg"].removeprefix("Value error, ")
                raise fail(f"invalid value {value!r}: {message}", *path, *err["loc"][1:]) from None
        # other keys' errors (required fields, cross-key checks) are reported once the whole
        # variant is resolved


def check_objective(value: Any, task: Task) -> Objective:
    """``metric`` or ``{metric, goal?, tie_break?}`` naming the task's metrics."""
    spec = {"metric": value} if isinstance(value, str) else value
    if not isinstance(spec, dict):
        raise fail("objective must be a metric name or a mapping {metric, goal, tie_break}, "
                   f"not {type(value).__name__}")
    for key in spec:
        if key not in OBJECTIVE_KEYS:
            raise fail(f"unknown key '{key}' (expected one of: {', '.join(OBJECTIVE_KEYS)})", key,
                       suggestion=suggest(key, OBJECTIVE_KEYS))
    if "metric" not in spec:
        raise fail("an objective needs 'metric' (one of the task's metrics: "
                   f"{', '.join(task.metrics)})")
    names = ", ".join(task.metrics)
    where = () if isinstance(value, str) else ("metric",)
    if not isinstance(spec["metric"], str) or spec["metric"] not in task.metrics:
        raise fail(f"unknown metric {spec['metric']!r} (task '{task.name}' metrics: {names})",
                   *where, suggestion=suggest(spec["metric"], task.metrics))
    if spec.get("goal") is not None and spec["goal"] not in GOALS:
        raise fail(f"goal must be 'max' or 'min' (got {spec['goal']!r})", "goal")
    ties = spec.get("tie_break") or []
    if not isinstance(ties, list):
        raise fail(f"tie_break must be a list of metric names, not {type(ties).__name__}",
                   "tie_break")
    for j, name in enumerate(ties):
        if not isinstance(name, str) or name not in task.metrics:
            raise fail(f"unknown metric {name!r} (task '{task.name}' metrics: {names})",
                       "tie_break", j, suggestion=suggest(name, task.metrics))
    return make_objective(spec, task.metrics)


def check_report_entry(value: Any, task: Task, *path: Any) -> dict:
    """One variant's numbers from the report (``path``: where the entry is): the task's metrics
    (finite numbers, at least one), ``params`` (an int >= 1) and ``time`` (per run, ``h:mm``)."""
    keys = (*task.metrics, *REPORT_EXTRAS)
    if not isinstance(value, dict):
        raise fail(f"a report entry must be a mapping of {', '.join(keys)} to numbers, "
                   f"not {type(value).__name__}", *path)
    for key, number in value.items():
        if key not in keys:
            raise fail(f"unknown key '{key}' (expected one of task '{task.name}' metrics "
                       f"{', '.join(task.metrics)}, or params, time)", *path, key,
                       suggestion=suggest(key, keys))
        if key == "time":
            if not isinstance(number, str) or not _TIME_RE.match(number):
                kind = "" if isinstance(number, str) else "a string "
                raise fail(f"time must be {kind}'h:mm' (got {number!r}; quote it: time: \"6:45\")",
                           *path, key)
        elif key == "params":
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise fail(f"params must be an integer >= 1 (got {number!r})", *path, key)
        elif isinstance(number, bool) or not isinstance(number, (int, float)) \
                or not math.isfinite(number):
            raise fail(f"{key} must be a finite number (got {number!r})", *path, key)
    if not any(key in task.metrics for key in value):
        raise fail(f"a report entry gives at least one of task '{task.name}' metrics "
                   f"({', '.join(task.metrics)})", *path)
    return value

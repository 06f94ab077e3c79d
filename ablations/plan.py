"""From a study file to a plan, and from a plan to trials: the one entry point the runner, the
views and the reports use.

:func:`load_study_file` loads the task named by ``task:`` (default ``mtl``; see
:mod:`ablations.task`), validates the file against it and resolves every profile
(:mod:`ablations.build`). :func:`expand_study` and :func:`resolve_config` turn a study into
trials once the base it starts from is known.

Precedence of a trial's config (:func:`resolve_config`)::

    the task's Config defaults < base < study.pin.set < variant.overrides < seed

where ``base`` is the start_from study's winner's resolved flat config, or for a study that
starts from ``none`` the profile base (``defaults`` then the profile's ``overrides``,
:func:`profile_base`). ``seed`` sets the Config's ``seed`` field when it has one.

A trial's identity (:func:`identity_hash`) is its task's name and its config without the task's
execution keys (the seed included): a config two studies ask for is trained once, and two tasks
never share a trial. Under ``identity: {code: strict}`` the code version and the task's data
fingerprint are part of it too (``StudySpec.code_version``, set by the runner).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from ablations.build import PlanBuilder, seeded
from ablations.errors import InputError, StudyFileError
from ablations.locate import suggest, validate_at
from ablations.schema import StudyFileModel
from ablations.specs import Source, StudyPlan, StudySpec, TrialSpec
from ablations.task import Task, TaskError, load_task
from ablations.variants import Variant
from ablations.yaml_source import YamlDocument, load_yaml

__all__ = ["Source", "StudyPlan", "StudySpec", "TrialSpec", "expand_study", "flat",
           "identity_hash", "load_study_file", "profile_base", "resolve_config"]


def load_study_file(path: str | Path, profile: Optional[str] = None) -> StudyPlan:
    """Load, validate and resolve ``path`` for ``profile`` (default: the file's
    ``default_profile``). Every problem raises StudyFileError naming file, line and key."""
    doc = load_yaml(path)
    if doc.data is None:
        raise StudyFileError(doc.file, "the study file is empty (expected a mapping with "
                             "'name' and 'studies')", line=1)
    if not isinstance(doc.data, dict):
        raise StudyFileError(doc.file, "the top level of a study file must be a mapping with "
                             f"'name' and 'studies', not a {type(doc.data).__name__}",
                             line=doc.line_for(()) or 1)
    task = _task(doc, Path(path))
    model: StudyFileModel = validate_at(doc, (), StudyFileModel, doc.data, {"task": task})
    builder = PlanBuilder(doc, model, task)
    chosen = profile if profile is not None else model.default_profile
    if chosen is not None and chosen not in model.profiles:
        known = ", ".join(model.profiles) or "none"
        raise doc.error(("profiles",), f"unknown profile '{chosen}' (profiles in this file: "
                        f"{known})", suggest(chosen, model.profiles))
    plans = {name: builder.plan(name) for name in (model.profiles or {None: None})}
    return plans[chosen] if chosen in plans else builder.plan(None)


def _task(doc: YamlDocument, path: Path) -> Task:
    """The task named by the file's ``task:`` (a module beside the file is found first)."""
    ref = doc.data.get("task")
    if ref is not None and not isinstance(ref, str):
        raise doc.error(("task",), "task must be a built-in task name (e.g. mtl) or a "
                        f"'package.module[:object]' reference, not {type(ref).__name__}")
    try:
        return load_task(ref, base_dir=path.resolve().parent)
    except TaskError as exc:
        raise doc.error(("task",), str(exc)) from None


def profile_base(plan: StudyPlan) -> dict:
    """``defaults`` + the profile's ``overrides``: the base of studies that start from none."""
    return dict(plan.base)


def flat(config: Any) -> dict:
    """A config as JSON-friendly plain data (tuples as lists): stored, logged and hashed."""
    return json.loads(config.model_dump_json())


def identity_hash(task: Task, config: Any, seed: Optional[int] = None,
                  code_version: Optional[str] = None) -> str:
    """16 hex digits of sha256 over the task's name and ``config`` without the task's execution
    keys (a trial finished on a GPU is not retrained on the CPU). ``seed`` is the trial's seed:
    needed when the Config has no ``seed`` field, else it must agree with the config's.

    ``code_version`` (``identity: {code: strict}``): the code version and the task's
    ``data_fingerprint(config)`` are hashed too, so other code or other data is another trial.
    None (``record``): identity by config alone, as before the policy existed."""
    keyed = {k: v for k, v in flat(config).items() if k not in task.execution_keys}
    if seed is not None:
        if keyed.setdefault("seed", seed) != seed:
            raise ValueError(f"seed {seed} disagrees with the config's seed {keyed['seed']}")
    identity: dict = {"task": task.name, "config": keyed}
    if code_version is not None:
        identity.update(code=code_version, data=task.data_fingerprint(config) if task.data_fingerprint else None)
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_config(base: dict, study: StudySpec, variant: Variant, seed: int) -> Any:
    """``base`` < ``study.pin.set`` < ``variant.overrides`` < ``seed``, as the study's task's
    Config.

    ``base`` is the start_from winner's flat config (:func:`flat`) or :func:`profile_base`. An
    invalid combination (found only now when it depends on a winner) raises StudyFileError at
    the variant's value (or the pin's) that the error names, else at the variant's entry:
    ``file:line: key: study 'x', variant 'y': invalid config on the winner of 'w': <problem>``.
    A spec without a file raises a plain InputError.
    """
    merged = dict(base)
    if study.pin is not None:
        merged.update(study.pin.set)
    merged.update(variant.overrides)
    try:
        return study.task.Config(**seeded(study.task, merged, seed))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else None
        problem = err["msg"].removeprefix("Value error, ")
        if key is not None:
            problem = f"{'.'.join(map(str, err['loc']))}: {problem} (got {err['input']!r})"
        on = f"the winner of '{study.start_from}'" if study.start_from else "the profile base"
        message = f"study '{study.name}', variant '{variant.name}': invalid config on {on}: {problem}"
        line, where = _culprit(study, variant, key, problem)
        if not study.file:
            raise InputError(message) from None
        raise StudyFileError(study.file, message, line=line, key=where) from None


def _culprit(study: StudySpec, variant: Variant, key: Optional[str], problem: str):
    """(line, key path) of what to blame: the variant's (else the pin's) value of ``key`` or, for
    a cross-key check, of a key the problem names; else the variant's entry, else the study's."""
    entry = study.variant_at.get(variant.name) or (study.search_at if study.kind == "search" else None)
    entries = [e for e in (entry, study.pin_at) if e is not None]
    for source in entries:
        named = [key] if key is not None else [
            k for k in sorted(source.keys, key=len, reverse=True)
            if re.search(rf"\b{re.escape(k)}\b", problem)]
        for k in named:
            if k in source.keys:
                return source.keys[k]
    fallback = entry or study.at
    return (fallback.line, fallback.key) if fallback else (None, None)


def expand_study(study: StudySpec, base: dict) -> list[TrialSpec]:
    """Every (variant, seed) of a grid/variants study, variant-major, with resolved configs.

    Search studies have no fixed trials: the runner asks optuna (``suggest_params`` +
    ``search_variant`` + ``resolve_config``); calling this for one raises ValueError.
    """
    if study.kind == "search":
        raise ValueError(f"study '{study.name}' is a search: its trials are proposed by optuna "
                         "one at a time (see ablations.suggest_params)")
    trials = []
    for variant in study.variants:
        for seed in study.seeds:
            config = resolve_config(base, study, variant, seed)
            trials.append(TrialSpec(study.name, variant.name, seed, config,
                                    identity_hash(study.task, config, seed, study.code_version)))
    return trials

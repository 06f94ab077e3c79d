"""The study file's workspace policies: what a finished trial keeps on disk, and whether the code
that trained a result is part of its identity.

Why a module: these keys say nothing about the experiment's design (its configs, studies and
winners) but about its workspace and its results' provenance, so they live apart from the schema
of studies (:mod:`ablations.schema` only names them). Both are top-level keys of the study file
(not per profile: one workspace, one policy)::

    checkpoints: {keep: final | all | none}   # default final
    identity: {code: record | strict}         # default record

``checkpoints.keep``: once a trial is done (or pruned), ``final`` keeps its final weights only
(the task's ``final_weights`` hook; a task without it keeps its full checkpoint), ``all`` keeps the
full checkpoint with optimizer state, ``none`` keeps no weights at all. An unfinished trial always
keeps the full checkpoint it resumes from.

``identity.code``: ``record`` stores the code version and data fingerprint with each run and
flags results trained by other code or data (``ablate status``, the report); ``strict`` makes them
part of the trial's identity, so such trials are trained again under a new identity (the old run
stays in the store).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ablations.locate import fail, suggest

KEEP = ("final", "all", "none")
CODE = ("record", "strict")


@dataclass(frozen=True)
class Policies:
    keep: str = "final"
    code: str = "record"


def _one_key(value: Any, key: str, choices: tuple[str, ...], default: str) -> str:
    """``{key: <one of choices>}`` (or None: the default); errors name the sub-key."""
    if value is None:
        return default
    if not isinstance(value, dict):
        raise fail(f"expected a mapping {{{key}: {'|'.join(choices)}}}, got {type(value).__name__} {value!r:.60}")
    for name in value:
        if name != key:
            raise fail(f"unknown key '{name}' (expected: {key})", name, suggestion=suggest(name, [key]))
    chosen = value.get(key, default)
    if chosen not in choices:
        raise fail(f"must be one of {', '.join(choices)} (got {chosen!r})", key,
                   suggestion=suggest(chosen, choices))
    return chosen


def check_checkpoints(value: Any) -> Any:
    """The ``checkpoints:`` key (a pydantic field validator of the study file's model)."""
    _one_key(value, "keep", KEEP, Policies.keep)
    return value


def check_identity(value: Any) -> Any:
    """The ``identity:`` key (a pydantic field validator of the study file's model)."""
    _one_key(value, "code", CODE, Policies.code)
    return value


def policies(checkpoints: Optional[dict], identity: Optional[dict]) -> Policies:
    """The validated keys' values as :class:`Policies` (defaults where absent)."""
    return Policies(keep=_one_key(checkpoints, "keep", KEEP, Policies.keep),
                    code=_one_key(identity, "code", CODE, Policies.code))

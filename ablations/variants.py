"""Variants: the named configurations a study compares.

Why a module: a study is ultimately a list of variants, whichever way it was written — an
explicit list (``variants:``, this module), a cartesian grid (``grid.py``) or optuna trials
(``search.py``). A variant is only ``name + overrides``; the overrides land on top of the
inherited winner's config (and the pin) in :func:`ablations.plan.resolve_config`.

Names are used by the runner as keys in the result database, in MLflow run names and possibly in
paths, so they are restricted to a safe character set (no ``/``, no leading ``.``) and names
derived from values are made deterministic: ``optimizer=adam,lr=0.0001``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ablations.yaml_source import LocatedError

#: Trials of one study (variants x seeds, or a search's n_trials). Every trial is a row in the
#: result store, an MLflow run and a line of ``ablate status``, all built before the first trial
#: trains; 10,000 trials of one minute each are a week of one GPU, so a larger study is a typo
#: (``seeds: 1000`` over a 100x100 grid) far more often than a plan.
MAX_STUDY_TRIALS = 10_000

VARIANT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$")
MAX_NAME_LEN = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")


@dataclass(frozen=True)
class Variant:
    """One configuration of a study: a name and the config keys it sets (do not mutate)."""

    name: str
    overrides: dict = field(default_factory=dict)


def format_value(value: Any) -> str:
    """Deterministic short text for a config value: ``1e-05``, ``0.0001``, ``true``, ``64x128``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form; 16.0 stays "16.0", distinct from 16
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def derive_name(overrides: dict) -> str:
    """``{"optimizer": "adam", "lr": 1e-4}`` -> ``optimizer=adam,lr=0.0001`` (key order kept).

    Characters outside the safe set become ``_``; an empty override set is ``baseline``.
    """
    if not overrides:
        return "baseline"
    name = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
    return _UNSAFE.sub("_", name)[:MAX_NAME_LEN]


def check_name(name: Any) -> str:
    """Return ``name`` if it is a safe variant name, else raise LocatedError."""
    if not isinstance(name, str):
        raise LocatedError(f"variant name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_LEN:
        raise LocatedError(f"variant name longer than {MAX_NAME_LEN} characters")
    if not VARIANT_NAME_RE.match(name):
        raise LocatedError(f"invalid variant name {name!r}: use letters, digits and _ . , = + - "
                           "(starting with a letter or digit; no '/' or '..' path parts)")
    return name


def check_unique(variants: Iterable[Variant]) -> None:
    """Raise LocatedError(index) on the first repeated variant name."""
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        if variant.name in seen:
            raise LocatedError(f"duplicate variant name '{variant.name}' (also variant "
                               f"{seen[variant.name]} of this study)", i)
        seen[variant.name] = i


def expand_variants(entries: list[dict]) -> list[Variant]:
    """Explicit ``variants:`` entries (``{name?, set}``) -> Variants, names derived when missing.

    Entries are the schema-validated plain dicts; raises LocatedError on duplicate names.
    """
    if not entries:
        raise LocatedError("variants must list at least one variant")
    out = []
    for i, entry in enumerate(entries):
        overrides = dict(entry.get("set") or {})
        name = entry.get("name")
        if name is None:
            name = derive_name(overrides)
        else:
            try:
                check_name(name)
            except LocatedError as exc:
                raise LocatedError(exc.message, i, "name") from None
        out.append(Variant(name, overrides))
    check_unique(out)
    return out

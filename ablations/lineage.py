"""Lineage: which study each study starts from, and what it pins on top.

Why a module: the report is a chain of ablations — every study starts from the winner of an
earlier one (normally the previous). ``start_from`` is ``previous`` (the default for all but the
first study), ``none`` (start from the profile's defaults; the default for the first study) or
the name of an *earlier* study. Requiring "earlier" makes the graph a forest in file order, so
there can be no cycle and the runner can run studies in file order.

A ``pin`` changes what is *inherited*, never which variant *wins*: the report picked SGD 0.03 as
the winner of 1.1.1 but continued with Adam 1e-4 for stability, so ``batch_size`` starts from the
optimizer study's winner with ``pin: {set: {optimizer: adam, lr: 0.0001}, reason: ...}``. The
runner still records SGD 0.03 as that study's winner; the reason is kept for the report.

The winner itself is chosen from results by the study's objective
(:func:`ablations.objective.pick_winner`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from ablations.yaml_source import LocatedError

PREVIOUS = "previous"
NONE = "none"
RESERVED_NAMES = frozenset({PREVIOUS, NONE})


@dataclass(frozen=True)
class Pin:
    """Config keys forced on top of the inherited winner, and why (shown in reports)."""

    set: dict = field(default_factory=dict)
    reason: str = ""


def resolve_start_from(names: Sequence[str], requested: Sequence[Optional[str]]) -> list[Optional[str]]:
    """Resolve each study's ``start_from`` to an earlier study's name or None (defaults).

    Raises LocatedError(index) for the first study that names an unknown study, itself, a later
    study (a cycle or a forward reference), or ``previous`` on the first study.
    """
    index = {name: i for i, name in enumerate(names)}
    out: list[Optional[str]] = []
    for i, (name, start) in enumerate(zip(names, requested)):
        if start is None:
            start = NONE if i == 0 else PREVIOUS
        if start == NONE:
            out.append(None)
        elif start == PREVIOUS:
            if i == 0:
                raise LocatedError("the first study has no previous study; use "
                                   "'start_from: none' (start from the defaults)", i)
            out.append(names[i - 1])
        elif start not in index:
            close = difflib.get_close_matches(start, list(names), n=1)
            raise LocatedError(f"start_from names unknown study '{start}' (use 'previous', "
                               "'none' or the name of an earlier study)", i,
                               suggestion=close[0] if close else None)
        elif start == name:
            raise LocatedError(f"study '{name}' cannot start from itself (cycle)", i)
        elif index[start] > i:
            raise LocatedError(f"study '{name}' starts from '{start}', which comes later in the "
                               "file: studies can only start from an earlier study (this would "
                               "make the chain a cycle or run out of order)", i)
        else:
            out.append(start)
    return out


def lineage(start_from: Mapping[str, Optional[str]], name: str) -> list[str]:
    """``name`` and its ancestors, root first: the studies whose winners ``name`` builds on."""
    chain = [name]
    while (parent := start_from.get(chain[-1])) is not None:
        if parent in chain:  # cannot happen after resolve_start_from; guard anyway
            raise ValueError(f"cycle through study '{parent}'")
        chain.append(parent)
    return chain[::-1]

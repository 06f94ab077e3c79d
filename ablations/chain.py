"""The chain: which study each study starts from, and what it pins on top.

Why a module: the report is a chain of ablations — every study starts from the winner of an
earlier one (normally the previous). ``start_from`` is ``previous`` (the default for all but the
first study), ``none`` (start from the profile's defaults; the default for the first study) or
the name of an *earlier* study. Requiring "earlier" makes the graph a forest in file order, so
there can be no cycle and the runner can run studies in file order.

A ``pin`` changes what is *inherited*, never which variant *wins*: the report picked SGD 0.03 as
the grader winner of 1.1.1 but continued with Adam 1e-4 for stability, so ``batch_size`` starts
from the optimizer study's winner with ``pin: {set: {optimizer: adam, lr: 0.0001}, reason: ...}``.
The runner still records SGD 0.03 as that study's winner; the reason is kept for the report.

The winner itself is chosen by the runner from results; :func:`select_winner` is the rule.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from ablations.yaml_source import LocatedError

PREVIOUS = "previous"
NONE = "none"
RESERVED_NAMES = frozenset({PREVIOUS, NONE})


@dataclass(frozen=True)
class Pin:
    """TrainConfig keys forced on top of the inherited winner, and why (shown in reports)."""

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


def select_winner(study: Any, mean_grader_by_variant: Mapping[str, float]) -> str:
    """The variant with the highest mean grader; NaN means "no result" and is skipped.

    Ties go to the variant listed first in the study (then to dict order for names the study
    does not list, e.g. search trials). The pin does not enter here: it changes what the next
    study inherits, not which variant won.
    """
    order = {v.name: i for i, v in enumerate(getattr(study, "variants", []) or [])}
    candidates = [(name, g) for name, g in mean_grader_by_variant.items()
                  if g is not None and not (isinstance(g, float) and math.isnan(g))]
    if not candidates:
        raise ValueError(f"study '{getattr(study, 'name', study)}' has no results to pick a "
                         "winner from")
    position = {name: order.get(name, len(order) + k) for k, (name, _) in enumerate(candidates)}
    return max(candidates, key=lambda item: (item[1], -position[item[0]]))[0]

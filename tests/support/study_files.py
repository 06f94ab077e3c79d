"""Study files of the shared fake task (:mod:`tests.support.fake_task`), as text: the one builder
the runner, store and fault tests share. Values are written as JSON, which YAML reads as written
(paths and strings quoted)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

FAKE_TASK = "tests.support.fake_task"


def fake_study(name: str, studies: Union[str, list], *, log_dir: Union[Path, str, None] = None, seeds: int = 1,
               **defaults) -> str:
    """A study file of the fake task: ``name``, ``defaults`` (its Config keys; 2 epochs of 3 steps
    unless given; ``log_dir``: where it writes down its calls and looks for ``fixed`` and its
    gates), then ``studies``: the text of the ``studies:`` list, or ``[(study, body)]`` for
    :func:`chain` (with ``seeds``)."""
    if isinstance(studies, str) and seeds != 1:
        raise TypeError("seeds applies to a [(study, body)] list; write them into a studies text")
    values = {"epochs": 2, "steps_per_epoch": 3, **defaults}
    if log_dir is not None:
        values["log_dir"] = str(log_dir)
    lines = [f"name: {name}", f"task: {FAKE_TASK}", "defaults:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in values.items()]
    text = studies if isinstance(studies, str) else chain(studies, seeds=seeds)
    return "\n".join(lines) + "\nstudies:\n" + text


def chain(studies: list, *, seeds: int = 1) -> str:
    """The ``studies:`` list of ``[(study, body)]``, each study after the first starting from the
    previous one's winner. ``body``: a grid ``{key: [values]}``, a list of grids (their union), or
    ``{"variants": {name: {key: value}}}``; ``seeds`` per study."""
    lines = []
    for i, (study, body) in enumerate(studies):
        lines.append(f"  - name: {study}")
        if i:
            lines.append("    start_from: previous")
        if seeds > 1:
            lines.append(f"    seeds: {seeds}")
        if isinstance(body, dict) and "variants" in body:
            lines.append("    variants:")
            lines += [f"      - {{name: {json.dumps(v)}, set: {json.dumps(s)}}}" for v, s in body["variants"].items()]
        else:
            lines.append(f"    grid: {json.dumps(body)}")
    return "\n".join(lines) + "\n"

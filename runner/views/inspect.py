"""``ablate inspect``: every trial's resolved config as a diff against its study's base, with the
number of parameters of its model and its estimated time, then the chain's cost preview
(:mod:`runner.views.cost`), without training anything (``--calibrate`` times a few steps).

Bases of studies whose predecessors have not run are projected
(:mod:`runner.orchestrate.projection`): the real winner once known, else the variant the report
itself chose (the best report number on the study's objective), else the study's first variant.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from ablations import Task, flat
from runner.orchestrate.projection import project_chain, projected_bases  # noqa: F401 - re-exported
from runner.orchestrate.session import Session
from runner.views.cost import cost_preview, duration, preview_lines


def print_inspect(session: Session, count_params: bool = True, calibrate: bool = False) -> None:
    task = session.task
    cost = cost_preview(session, calibrate=calibrate)
    rates = cost.rates
    counts = None
    if count_params and task.count_parameters is not None:  # kept in an existing workspace only
        counts = ParamCounts(task, session.workspace / "cache" / "param_counts.json", keep=session.workspace.is_dir())
    for study in project_chain(session):
        spec = study.spec
        if study.base is None:
            print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: {study.origin}")
            continue
        base = study.base
        # The profile base names only some keys: diff against it as a full config, or every
        # key it leaves at its default shows up as a difference.
        full_base = flat(task.Config.model_validate(base)) if spec.kind != "search" else base
        pin = f"; pinned {spec.pin.set} ({spec.pin.reason})" if spec.pin else ""
        print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: {study.origin}{pin}")
        if study.error:
            print(f"   blocked: {study.error}")
            continue
        if spec.kind == "search":
            space = ", ".join(f"{k}: {p.type} {p.choices or (p.low, p.high)}" for k, p in spec.search.space.items())
            each = rates.seconds(study.trials[0].config)
            print(f"   search {spec.search.sampler} x {spec.search.n_trials} trials over {space}; "
                  f"pruner {spec.search.pruner}; ~{duration(each)} per trial")
            continue
        for trial in study.trials:
            config = flat(trial.config)
            diff = {k: v for k, v in config.items() if full_base.get(k) != v}
            params = f"  #params {counts.count(trial.config):,}" if counts is not None else ""
            print(f"   {trial.variant} seed={trial.seed} hash={trial.config_hash}{params}  "
                  f"~{duration(rates.seconds(trial.config))}  {json.dumps(diff, sort_keys=True)}")
    if counts is not None:
        counts.save()
    profile = f" --profile {session.plan.profile}" if session.plan.profile else ""
    print()
    for line in preview_lines(cost, command=f"ablate inspect {session.study_file}{profile} --calibrate"):
        print(line)


class ParamCounts:
    """The task's parameter counts, kept in ``<workspace>/cache/param_counts.json`` so that a second
    ``ablate inspect`` counts nothing. Keyed by the task and the config without its seed (the seed
    never changes a model's size). ``keep`` False: counted, never written."""

    def __init__(self, task: Task, path: Path, keep: bool = True):
        self.task, self.path, self.keep = task, path, keep
        try:
            self.counts: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.counts = {}
        self.dirty = False

    def key(self, config: Any) -> str:
        values = {k: v for k, v in flat(config).items() if k != "seed"}
        return json.dumps({"task": self.task.name, "config": values}, sort_keys=True)

    def count(self, config: Any) -> int:
        key = self.key(config)
        if key not in self.counts:
            self.counts[key] = int(self.task.count_parameters(config))
            self.dirty = True
        return self.counts[key]

    def get(self, config: Any) -> Optional[int]:
        value = self.counts.get(self.key(config))
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def save(self) -> None:
        if self.dirty and self.keep:
            from runner.atomic import write_text_atomic

            write_text_atomic(self.path, json.dumps(self.counts, sort_keys=True, indent=1))

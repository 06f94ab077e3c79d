"""``ablate inspect``: every trial's resolved config as a diff against its study's base, with the
number of parameters of its model, without training anything.

Bases of studies whose predecessors have not run are projected: the real winner once known, else
the variant the report itself chose (the best report number on the study's objective), else the
study's first variant.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from ablations import StudySpec, Task, flat, resolve_config
from ablations.errors import InputError
from runner.orchestrate.session import Session
from runner.orchestrate.walk import studies_in_scope, survey


def projected_bases(session: Session) -> dict[str, tuple[dict, str]]:
    """Base config of every study and where it comes from. A study that starts from one whose
    variants cannot be built on its own base has none (``print_inspect`` says why)."""
    from ablations import profile_base

    bases: dict[str, tuple[dict, str]] = {}
    winners: dict[str, tuple[dict, str]] = {}
    for state in survey(session, studies_in_scope(session, None)):
        spec = state.spec
        if spec.start_from is None:
            bases[spec.name] = (profile_base(session.plan), "profile defaults")
        elif spec.start_from in winners:
            parent_config, how = winners[spec.start_from]
            bases[spec.name] = (parent_config, f"{how} of {spec.start_from}")
        else:
            continue
        if state.winner is not None:
            winners[spec.name] = (state.winner.config, f"winner {state.winner.variant}")
        else:
            try:
                winners[spec.name] = _projected_winner(spec, bases[spec.name][0])
            except InputError:
                pass  # its variants cannot be built on this base: the studies after it have none
    return bases


def _projected_winner(spec: StudySpec, base: dict) -> tuple[dict, str]:
    if not spec.variants:  # a search study: its base stands in for its winner
        return base, "base (search not run)"
    metric, objective = spec.objective.metric, spec.objective
    graded = [v for v in spec.variants if isinstance((spec.report.get(v.name) or {}).get(metric), (int, float))]
    chosen, how = spec.variants[0], "first variant (not run)"
    if graded:
        chosen = max(graded, key=lambda v: objective.oriented(float(spec.report[v.name][metric])))
        how = "report's winner (not run)"
    return flat(resolve_config(base, spec, chosen, spec.seeds[0])), f"{how}: {chosen.name}"


def print_inspect(session: Session, count_params: bool = True) -> None:
    from ablations import expand_study

    task = session.task
    bases = projected_bases(session)
    counts = None
    if count_params and task.count_parameters is not None:  # kept in an existing workspace only
        counts = ParamCounts(task, session.workspace / "cache" / "param_counts.json", keep=session.workspace.is_dir())
    for spec in session.plan.studies:
        if spec.name not in bases:
            print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: none ({spec.start_from} cannot run)")
            continue
        base, origin = bases[spec.name]
        # The profile base names only some keys: diff against it as a full config, or every
        # key it leaves at its default shows up as a difference.
        full_base = flat(task.Config.model_validate(base)) if spec.kind != "search" else base
        pin = f"; pinned {spec.pin.set} ({spec.pin.reason})" if spec.pin else ""
        print(f"\n== {spec.name}: {spec.title} [{spec.kind}] base: {origin}{pin}")
        if spec.kind == "search":
            space = ", ".join(f"{k}: {p.type} {p.choices or (p.low, p.high)}" for k, p in spec.search.space.items())
            print(f"   search {spec.search.sampler} x {spec.search.n_trials} trials over {space}; "
                  f"pruner {spec.search.pruner}")
            continue
        try:
            trials = expand_study(spec, base)
        except InputError as exc:
            print(f"   blocked: {exc}")
            continue
        for trial in trials:
            config = flat(trial.config)
            diff = {k: v for k, v in config.items() if full_base.get(k) != v}
            params = f"  #params {counts.count(trial.config):,}" if counts is not None else ""
            print(f"   {trial.variant} seed={trial.seed} hash={trial.config_hash}{params}  "
                  f"{json.dumps(diff, sort_keys=True)}")
    if counts is not None:
        counts.save()


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

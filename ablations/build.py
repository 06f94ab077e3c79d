"""Building a plan: every study of a study file resolved for one profile, every config checked.

Why a module: this is where the pieces meet — the schema's models (validated against the task),
the lineage, the profile's base and trims (:mod:`ablations.profiles`), grids, variants, seeds,
searches and objectives. Everything that can be checked without training is checked here, for
*every* profile in the file, so a broken file fails before any trial starts.

Winners are only known after training, so each variant is validated against ``profile base +
the pins along its start_from lineage`` (with the study's first seed): this catches every bad
key, type and value, and the cross-key checks of the task's Config on that base.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import ValidationError

from ablations import grid as grid_mod
from ablations import variants as variants_mod
from ablations.advance import AdvanceRule, merge_advance
from ablations.design_schema import SearchModel
from ablations.lineage import Pin, lineage, resolve_start_from
from ablations.objective import Objective
from ablations.policies import policies
from ablations.locate import suggest, validate_at
from ablations.profiles import (DESIGN, check_profiles, dump, profile_chain, profile_config,
                                profile_objective, trims)
from ablations.schema import StudyFileModel, StudyModel
from ablations.search import SearchParam, SearchSpec
from ablations.seeds import adaptive_seeds, normalize_seeds
from ablations.specs import Source, StudyPlan, StudySpec
from ablations.task import Task
from ablations.yaml_source import KeyPath, LocatedError, YamlDocument, format_path


def seeded(task: Task, values: dict, seed: int) -> dict:
    """``values`` with the trial's ``seed`` when the task's Config has a ``seed`` field (a Config
    without one is seeded by the runner alone; the seed is still part of the trial's identity)."""
    return {**values, "seed": seed} if "seed" in task.Config.model_fields else dict(values)


class PlanBuilder:
    """Cross-entry checks (names, lineage, profiles) once; then :meth:`plan` per profile."""

    def __init__(self, doc: YamlDocument, model: StudyFileModel, task: Task):
        self.doc, self.model, self.task = doc, model, task
        names = [s.name for s in model.studies]
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                raise doc.error(("studies", i, "name"), f"duplicate study name '{name}' (first "
                                f"defined on line {doc.line_for(('studies', seen[name]))})")
            seen[name] = i
        self.index = seen
        try:
            resolved = resolve_start_from(names, [s.start_from for s in model.studies])
        except LocatedError as exc:
            raise doc.error(("studies", *exc.path, "start_from"), exc.message,
                            exc.suggestion) from None
        self.start_from = dict(zip(names, resolved))
        check_profiles(doc, model, self.index)

    def plan(self, pname: Optional[str]) -> StudyPlan:
        """The plan for profile ``pname`` (None: the file without profiles)."""
        doc, model = self.doc, self.model
        base, sources = profile_config(doc, model, pname)
        fallback = ("profiles", pname, "overrides") if pname else ("defaults",)
        self._validate(dict(base), sources, fallback, "the profile base (defaults + overrides)")
        objective = profile_objective(doc, model, pname, self.task)
        advance = [model.advance] + [model.profiles[p].advance for p in profile_chain(doc, model, pname)]

        trimmed = trims(doc, model, pname)
        pins: dict[str, tuple[dict, dict[str, KeyPath]]] = {}
        studies = []
        for i, raw in enumerate(model.studies):
            spath: KeyPath = ("studies", i)
            pin_set = dict(raw.pin.set) if raw.pin else {}
            pins[raw.name] = (pin_set, {k: spath + ("pin", "set", k) for k in pin_set})
            chain_base, chain_sources = dict(base), dict(sources)
            for ancestor in lineage(self.start_from, raw.name):
                chain_base.update(pins[ancestor][0])
                chain_sources.update(pins[ancestor][1])
            if raw.pin:
                self._validate(dict(chain_base), chain_sources, spath + ("pin",),
                               f"study '{raw.name}': the pinned base")
            studies.append(self._study(raw, spath, trimmed.get(raw.name, {}), chain_base,
                                       chain_sources, raw.objective or objective,
                                       merge_advance(*advance, raw.advance)))
        return StudyPlan(file=doc.file, name=model.name, profile=pname, workspace=model.workspace,
                         studies=studies, task=self.task, objective=objective, base=base,
                         policies=policies(model.checkpoints, model.identity))

    def _study(self, raw: StudyModel, spath: KeyPath, trim: dict, chain_base: dict,
               chain_sources: dict, objective: Objective, advance: AdvanceRule) -> StudySpec:
        seeds_value, seeds_path = trim.get("seeds", (raw.seeds, spath + ("seeds",)))
        seeds = normalize_seeds(seeds_value)
        adaptive = adaptive_seeds(seeds_value)
        kind, variants, paths, search = self._design(raw, spath, trim)
        if kind == "search" and (len(seeds) > 1 or adaptive is not None):
            # Each Optuna trial is one training; repeating it over seeds would need one objective
            # from several runs. Refused rather than silently training the first seed only.
            raise self.doc.error(seeds_path, f"study '{raw.name}' is a search study: each Optuna trial "
                                 "trains one seed, so it takes a single seed (got "
                                 f"{'adaptive seeds' if adaptive else len(seeds)}); "
                                 "repeat its winner over seeds in a grid study that starts from it")
        if adaptive is not None:  # counted at their most
            seeds = list(range(adaptive.max))
        self._check_baseline(raw, spath, variants)
        if len(variants) * len(seeds) > variants_mod.MAX_STUDY_TRIALS:
            # counted, not expanded: the trials are built only by expand_study, after this check
            design = next((trim[f][1] for f in DESIGN if f in trim), spath + (kind,))
            raise self.doc.error(seeds_path if len(seeds) > 1 else design,
                                 f"study '{raw.name}' has {len(variants):,} variants x "
                                 f"{len(seeds):,} seeds = {len(variants) * len(seeds):,} trials; "
                                 f"at most {variants_mod.MAX_STUDY_TRIALS:,} trials per study "
                                 "(use fewer seeds or values, or split it into studies)")
        for variant, (vpath, vsources) in zip(variants, paths):
            cfg = seeded(self.task, {**chain_base, **variant.overrides}, seeds[0])
            self._validate(cfg, {**chain_sources, **vsources}, vpath,
                           f"study '{raw.name}', variant '{variant.name}'", own=vsources)
        if search is not None:
            search_path = trim["search"][1] if "search" in trim else spath + ("search",)
            for key, param in search.space.items():
                ppath = search_path + ("space", key)
                probes = ([(c, ppath + ("choices", j)) for j, c in enumerate(param.choices)]
                          if param.type == "categorical"
                          else [(param.low, ppath + ("low",)), (param.high, ppath + ("high",))])
                for value, vpath in probes:
                    cfg = seeded(self.task, {**chain_base, key: value}, seeds[0])
                    self._validate(cfg, {**chain_sources, key: vpath}, vpath,
                                   f"study '{raw.name}', search space '{key}'")
        seeds = seeds[:adaptive.min] if adaptive is not None else seeds
        pin = Pin(dict(raw.pin.set), raw.pin.reason) if raw.pin else None
        pin_path = spath + ("pin", "set")
        search_at = None
        if search is not None:
            space = search_path + ("space",)
            search_at = self._source(space, {k: space + (k,) for k in search.space})
        return StudySpec(name=raw.name, title=raw.title or raw.name, section=raw.section or "",
                         description=raw.description, start_from=self.start_from[raw.name],
                         pin=pin, seeds=seeds, kind=kind, variants=variants, search=search,
                         task=self.task, objective=objective,
                         report={k: dict(v) for k, v in raw.report.items()}, file=self.doc.file,
                         at=self._source(spath, {}),
                         pin_at=self._source(pin_path, {k: pin_path + (k,) for k in pin.set})
                         if pin else None,
                         variant_at={v.name: self._source(*p) for v, p in zip(variants, paths)},
                         search_at=search_at, advance=advance, baseline=raw.baseline,
                         adaptive=adaptive)

    def _check_baseline(self, raw: StudyModel, spath: KeyPath, variants: list) -> None:
        """``baseline:`` names a variant that this profile runs (a search has none)."""
        if raw.baseline is None:
            return
        names = [v.name for v in variants]
        if raw.baseline not in names:
            where = (f"the variants this profile runs: {', '.join(names)}" if names
                     else "a search study has no fixed variants")
            raise self.doc.error(spath + ("baseline",), f"baseline names no variant of study "
                                 f"'{raw.name}' ({where})", suggest(raw.baseline, names))

    def _source(self, path: KeyPath, keys: dict[str, KeyPath]) -> Source:
        line = self.doc.line_for
        return Source(line(path), format_path(path),
                      {k: (line(p), format_path(p)) for k, p in keys.items()})

    def _design(self, raw: StudyModel, spath: KeyPath, trim: dict):
        """(kind, variants, [(variant path, key -> value path)], search) after the trim:
        the trim's grid/variants/search (or the study's own design), then its ``only``."""
        doc = self.doc
        if "search" in trim:
            patch, tpath = trim["search"]
            merged = {**dump(raw.search), **patch} if raw.search is not None else patch
            kind, search = "search", _search_spec(validate_at(doc, tpath, SearchModel, merged,
                                                               {"task": self.task}))
        elif "grid" in trim:
            kind, search = "grid", None
            variants, paths = self._grid(*trim["grid"])
        elif "variants" in trim:
            value, tpath = trim["variants"]
            kind, search = "variants", None
            variants, paths = self._variants([v.model_dump() for v in value], tpath)
        elif raw.search is not None:
            kind, search = "search", _search_spec(raw.search)
        elif raw.grid is not None:
            kind, search = "grid", None
            variants, paths = self._grid(raw.grid, spath + ("grid",))
        else:
            kind, search = "variants", None
            variants, paths = self._variants([v.model_dump() for v in raw.variants],
                                             spath + ("variants",))
        if kind == "search":
            if "only" in trim:
                raise doc.error(trim["only"][1], f"'only' picks variants of a grid or variants "
                                f"study; '{raw.name}' is a search here (trim its search instead)")
            return kind, [], [], search
        if "only" in trim:
            keep, opath = trim["only"]
            names = [v.name for v in variants]
            for j, name in enumerate(keep):
                if name not in names:
                    raise doc.error(opath + (j,), f"study '{raw.name}' has no variant '{name}' "
                                    f"(variants: {', '.join(names)})", suggest(name, names))
            pairs = [(v, p) for v, p in zip(variants, paths) if v.name in keep]
            variants, paths = [v for v, _ in pairs], [p for _, p in pairs]
        return kind, variants, paths, None

    def _grid(self, value: Any, gpath: KeyPath):
        variants = grid_mod.expand_grid(value)
        vpaths = grid_mod.value_paths(value)
        paths = [(gpath, {k: gpath + p for k, p in vp.items()}) for vp in vpaths]
        return variants, paths

    def _variants(self, entries: list[dict], vpath: KeyPath):
        try:
            variants = variants_mod.expand_variants(entries)
        except LocatedError as exc:
            raise self.doc.error(vpath + exc.path, exc.message, exc.suggestion) from None
        paths = [(vpath + (j,), {k: vpath + (j, "set", k) for k in v.overrides})
                 for j, v in enumerate(variants)]
        return variants, paths

    def _validate(self, cfg: dict, sources: dict, fallback: KeyPath, what: str,
                  own: Optional[dict] = None) -> None:
        """Construct the task's Config from ``cfg``; an error points at the entry that set the
        bad key.

        ``sources`` maps keys to where they were set; ``own`` (a subset) are the keys set by
        the entry being checked, preferred when a cross-key error names several keys."""
        try:
            self.task.Config(**cfg)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = err["loc"][0] if err["loc"] else None
            if key is not None:
                path = sources.get(key, fallback)
            else:  # a cross-key check: point at a key its message names, this entry's first
                named = [k for k in sorted(sources, key=len, reverse=True)
                         if re.search(rf"\b{re.escape(k)}\b", err["msg"])]
                named.sort(key=lambda k: k not in (own or {}))
                path = sources[named[0]] if named else fallback
            value = f" (got {err['input']!r})" if key is not None else ""
            raise self.doc.error(path, f"{what}: invalid config: "
                                 f"{(str(key) + ': ') if key else ''}{err['msg']}{value}") from None


def _search_spec(model: SearchModel) -> SearchSpec:
    space = {}
    for key, p in model.space.items():
        if p.type == "int":
            space[key] = SearchParam("int", int(p.low), int(p.high), int(p.step or 1))
        elif p.type == "categorical":
            space[key] = SearchParam("categorical", choices=tuple(p.choices))
        else:
            space[key] = SearchParam(p.type, float(p.low), float(p.high),
                                     float(p.step) if p.step else None)
    return SearchSpec(sampler=model.sampler, n_trials=model.n_trials, space=space,
                      pruner=model.pruner)

"""From a study file to a plan: validated, profile applied, every variant config checked.

Why a module: this is the one entry point the runner and the reports use
(:func:`load_study_file`), and the one place where the pieces meet — YAML with lines
(``yaml_source``), the schema (``schema``), the chain (``chain``), grids, variants, seeds and
searches. Everything that can be checked without training is checked here, for *every* profile
in the file (not only the one asked for), so a broken file fails before any trial starts.

Precedence of a trial's config (:func:`resolve_config`)::

    TrainConfig defaults < base < study.pin.set < variant.overrides < seed

where ``base`` is the start_from study's winner's resolved flat config, or for a study that
starts from ``none`` the profile base (``defaults`` then the profile's ``overrides``,
:func:`profile_base`). Winners are only known after training, so at load time each variant is
validated against ``profile base + the pins along its start_from chain``: this catches every
bad key, type and value, and the cross-key checks of TrainConfig on that base.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import ValidationError

from ablations import grid as grid_mod
from ablations import variants as variants_mod
from ablations.chain import Pin, lineage, resolve_start_from
from ablations.errors import InputError, StudyFileError
from ablations.schema import (ReportNumbers, SearchModel, StudyFileModel, StudyModel,
                              TrimModel, suggest, validate_at)
from ablations.search import SearchParam, SearchSpec
from ablations.seeds import normalize_seeds
from ablations.trial import TrainConfig
from ablations.variants import Variant
from ablations.yaml_source import KeyPath, LocatedError, YamlDocument, format_path, load_yaml

StudyKind = Literal["grid", "variants", "search"]
_DESIGN = ("only", "grid", "variants", "search")
_REPLACING = ("grid", "variants", "search")  # trim fields that replace the study's design


@dataclass(frozen=True)
class Source:
    """Where an entry of the study file (a variant, a grid's values, a pin, a search space) is,
    kept so that an error found only once a winner is known still names the file, line and key."""

    line: Optional[int]
    key: str  # the entry, e.g. studies[3].variants[1]
    keys: dict = field(default_factory=dict)  # config key -> (line, key path) of the value set


@dataclass(frozen=True)
class StudySpec:
    """One resolved study (profile trims applied). ``file`` and the sources locate its entries
    for :func:`resolve_config`; a spec built by hand may leave them empty."""

    name: str
    title: str
    section: str
    description: str
    start_from: Optional[str]  # an earlier study's name, or None: start from the profile base
    pin: Optional[Pin]
    seeds: list[int]
    kind: StudyKind
    variants: list[Variant]  # grid/variants studies; empty for a search
    search: Optional[SearchSpec]  # search studies only
    report: dict[str, ReportNumbers] = field(default_factory=dict)
    file: str = ""
    at: Optional[Source] = None  # the study entry
    pin_at: Optional[Source] = None
    variant_at: dict[str, Source] = field(default_factory=dict)  # variant name -> its entry
    search_at: Optional[Source] = None  # the search space (every Optuna trial's values)


@dataclass(frozen=True)
class StudyPlan:
    """A loaded study file for one profile. ``studies`` are in file order and each study's
    ``start_from`` study comes before it."""

    file: str
    name: str
    profile: Optional[str]  # None when the file defines no profiles
    workspace: Optional[str]
    studies: list[StudySpec]
    base: dict = field(default_factory=dict)  # defaults + profile overrides (see profile_base)

    def study(self, name: str) -> StudySpec:
        for study in self.studies:
            if study.name == name:
                return study
        raise KeyError(name)


@dataclass(frozen=True)
class TrialSpec:
    """One training run: a study's variant at one seed, with its resolved config."""

    study: str
    variant: str
    seed: int
    config: TrainConfig
    config_hash: str


# --------------------------------------------------------------------------- public functions
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
    model: StudyFileModel = validate_at(doc, (), StudyFileModel, doc.data)
    builder = _Builder(doc, model)
    chosen = profile if profile is not None else model.default_profile
    if chosen is not None and chosen not in model.profiles:
        known = ", ".join(model.profiles) or "none"
        raise doc.error(("profiles",), f"unknown profile '{chosen}' (profiles in this file: "
                        f"{known})", suggest(chosen, model.profiles))
    plans = {name: builder.plan(name) for name in (model.profiles or {None: None})}
    return plans[chosen] if chosen in plans else builder.plan(None)


def profile_base(plan: StudyPlan) -> dict:
    """``defaults`` + the profile's ``overrides``: the base of studies that start from none."""
    return dict(plan.base)


def resolve_config(base: dict, study: StudySpec, variant: Variant, seed: int) -> TrainConfig:
    """``base`` < ``study.pin.set`` < ``variant.overrides`` < ``seed``, as a TrainConfig.

    ``base`` is the start_from winner's flat config (``TrainConfig.flat()``) or
    :func:`profile_base`. An invalid combination (found only now when it depends on a winner)
    raises StudyFileError at the variant's value (or the pin's) that the error names, else at
    the variant's entry: ``file:line: key: study 'x', variant 'y': invalid config on the winner
    of 'w': <problem>``. A spec without a file raises a plain InputError.
    """
    merged = dict(base)
    if study.pin is not None:
        merged.update(study.pin.set)
    merged.update(variant.overrides)
    merged["seed"] = seed
    try:
        return TrainConfig(**merged)
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
            trials.append(TrialSpec(study.name, variant.name, seed, config, config.identity_hash()))
    return trials


# --------------------------------------------------------------------------- building
class _Builder:
    """Cross-entry checks (names, chain, profiles) and per-profile resolution."""

    def __init__(self, doc: YamlDocument, model: StudyFileModel):
        self.doc, self.model = doc, model
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
        self._check_profiles()

    # -- profiles --------------------------------------------------------------------------
    def _check_profiles(self) -> None:
        doc, profiles = self.doc, self.model.profiles
        if self.model.default_profile is not None and self.model.default_profile not in profiles:
            raise doc.error(("default_profile",), f"unknown profile "
                            f"'{self.model.default_profile}' (profiles: "
                            f"{', '.join(profiles) or 'none'})",
                            suggest(self.model.default_profile, profiles))
        for pname, prof in profiles.items():  # every parent exists before any chain is walked
            if prof.extends is not None and prof.extends not in profiles:
                raise doc.error(("profiles", pname, "extends"),
                                f"extends unknown profile '{prof.extends}'",
                                suggest(prof.extends, profiles))
        for pname, prof in profiles.items():
            self._profile_chain(pname)
            for sname in prof.studies:
                if sname not in self.index:
                    raise doc.error(("profiles", pname, "studies", sname),
                                    f"trim names unknown study '{sname}'",
                                    suggest(sname, self.index))

    def _profile_chain(self, pname: str) -> list[str]:
        chain = [pname]
        while (parent := self.model.profiles[chain[-1]].extends) is not None:
            if parent in chain:
                raise self.doc.error(("profiles", chain[-1], "extends"),
                                     f"profiles extend each other in a cycle: "
                                     f"{' -> '.join(chain + [parent])}")
            chain.append(parent)
        return chain[::-1]

    def _trims(self, pname: Optional[str]) -> dict[str, dict[str, tuple[Any, KeyPath]]]:
        """study -> trim field -> (value, path), the profile's parents applied first."""
        out: dict[str, dict[str, tuple[Any, KeyPath]]] = {}
        for p in (self._profile_chain(pname) if pname else []):
            for sname, trim in self.model.profiles[p].studies.items():
                eff = out.setdefault(sname, {})
                tpath = ("profiles", p, "studies", sname)
                given = {f: getattr(trim, f) for f in TrimModel.model_fields
                         if getattr(trim, f) is not None}
                if "search" in given and "search" in eff:
                    parent = eff["search"][0]
                    given["search"] = {**parent, **_dump(given["search"])}
                elif "search" in given:
                    given["search"] = _dump(given["search"])
                if any(f in _REPLACING for f in given):  # a new design drops the parent's
                    for f in _DESIGN:
                        eff.pop(f, None)
                for f, value in given.items():
                    eff[f] = (value, tpath + (f,))
        return out

    # -- one profile -------------------------------------------------------------------------
    def plan(self, pname: Optional[str]) -> StudyPlan:
        model = self.model
        base: dict = {}
        sources: dict[str, KeyPath] = {}
        for key, value in model.defaults.items():
            base[key], sources[key] = value, ("defaults", key)
        for p in (self._profile_chain(pname) if pname else []):
            for key, value in model.profiles[p].overrides.items():
                base[key], sources[key] = value, ("profiles", p, "overrides", key)
        fallback = ("profiles", pname, "overrides") if pname else ("defaults",)
        self._validate(dict(base), sources, fallback, "the profile base (defaults + overrides)")

        trims = self._trims(pname)
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
            studies.append(self._study(raw, spath, trims.get(raw.name, {}), chain_base,
                                       chain_sources))
        return StudyPlan(file=self.doc.file, name=model.name, profile=pname,
                         workspace=model.workspace, studies=studies, base=base)

    def _study(self, raw: StudyModel, spath: KeyPath, trim: dict, chain_base: dict,
               chain_sources: dict) -> StudySpec:
        seeds_value, seeds_path = trim.get("seeds", (raw.seeds, spath + ("seeds",)))
        seeds = normalize_seeds(seeds_value)
        kind, variants, paths, search = self._design(raw, spath, trim)
        if kind == "search" and len(seeds) > 1:
            # Each Optuna trial is one training; repeating it over seeds would need one objective
            # from several runs. Refused rather than silently training the first seed only.
            raise self.doc.error(seeds_path, f"study '{raw.name}' is a search study: each Optuna trial "
                                 f"trains one seed, so it takes a single seed (got {len(seeds)}); "
                                 "repeat its winner over seeds in a grid study that starts from it")
        if len(variants) * len(seeds) > variants_mod.MAX_STUDY_TRIALS:
            # counted, not expanded: the trials are built only by expand_study, after this check
            design = next((trim[f][1] for f in _DESIGN if f in trim), spath + (kind,))
            raise self.doc.error(seeds_path if len(seeds) > 1 else design,
                                 f"study '{raw.name}' has {len(variants):,} variants x "
                                 f"{len(seeds):,} seeds = {len(variants) * len(seeds):,} trials; "
                                 f"at most {variants_mod.MAX_STUDY_TRIALS:,} trials per study "
                                 "(use fewer seeds or values, or split it into studies)")
        for variant, (vpath, vsources) in zip(variants, paths):
            cfg = {**chain_base, **variant.overrides, "seed": seeds[0]}
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
                    cfg = {**chain_base, key: value, "seed": seeds[0]}
                    self._validate(cfg, {**chain_sources, key: vpath}, vpath,
                                   f"study '{raw.name}', search space '{key}'")
        pin = Pin(dict(raw.pin.set), raw.pin.reason) if raw.pin else None
        pin_path = spath + ("pin", "set")
        search_at = None
        if search is not None:
            space = search_path + ("space",)
            search_at = self._source(space, {k: space + (k,) for k in search.space})
        return StudySpec(name=raw.name, title=raw.title or raw.name, section=raw.section or "",
                         description=raw.description, start_from=self.start_from[raw.name],
                         pin=pin, seeds=seeds, kind=kind, variants=variants, search=search,
                         report=dict(raw.report), file=self.doc.file, at=self._source(spath, {}),
                         pin_at=self._source(pin_path, {k: pin_path + (k,) for k in pin.set})
                         if pin else None,
                         variant_at={v.name: self._source(*p) for v, p in zip(variants, paths)},
                         search_at=search_at)

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
            merged = {**_dump(raw.search), **patch} if raw.search is not None else patch
            kind, search = "search", _search_spec(validate_at(doc, tpath, SearchModel, merged))
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
        """Construct TrainConfig(cfg); an error points at the entry that set the bad key.

        ``sources`` maps keys to where they were set; ``own`` (a subset) are the keys set by
        the entry being checked, preferred when a cross-key error names several keys."""
        try:
            TrainConfig(**cfg)
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


def _dump(model: Any) -> dict:
    return model.model_dump(exclude_none=True)


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

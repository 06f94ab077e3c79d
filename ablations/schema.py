"""The study-file schema: pydantic v2 models (``extra="forbid"``, strict types) of its shape.

Why a module: the file format is the product's main input, so its shape is written down once,
here, and every mistake is reported as ``file:line: key.path: message`` (exit code 2, naming the
file, key and line; see :mod:`ablations.locate`). Config keys are the task's: the models are
validated with ``context={"task": Task}`` (:func:`ablations.plan.load_study_file` loads the task
named by ``task:`` first), and every mapping of config keys, grid axis and search space is
checked against ``task.Config``, so a user's task gets the same errors as the built-in one.
This module holds the file's layout (file, profiles, studies, trims, pins); a study's design
(grid, variants, search space, seeds) is :mod:`ablations.design_schema`, the base that refuses
unknown keys :mod:`ablations.strict`.

File layout (see ``studies.yaml`` at the repository root for a complete example)::

    name: <experiment name>            # safe identifier: [a-z0-9][a-z0-9_-]*
    task: mtl | pkg.module[:object]    # optional, default mtl (see ablations.task)
    objective: <metric> | {metric, goal: max|min, tie_break: [<metric>, ...]}  # optional
    advance: {when: best_mean|significant, alpha: 0.05, min_effect: 0}  # optional (ablations.advance)
    workspace: <dir>                   # optional; default chosen by the runner (./ablate-runs)
    checkpoints: {keep: final|all|none}  # optional (ablations.policies)
    identity: {code: record|strict}    # optional (ablations.policies)
    defaults: {<config key>: value}    # base of every profile
    default_profile: <profile name>    # used when no --profile is given
    profiles:
      <profile>:
        description: <text>
        extends: <profile>             # optional: the parent's overrides and trims apply first
        objective: ...                 # optional, over the file's
        advance: {...}                 # optional, key by key over the file's
        overrides: {<config key>: value}   # on top of defaults
        studies:                       # per-study trims, all optional:
          <study>:
            seeds: N | [s, ...] | {min, max, step}   #   replace the study's seeds
            only: [<variant>, ...]     #   keep only these variants (after a parent's design)
            grid: ... | variants: ...  #   replace the study's design with this grid / variant list
            search: {...}              #   search study: merged into its search (e.g. n_trials);
                                       #   grid/variants study: a complete search replacing it
    studies:                           # ordered; each starts from an earlier study's winner
      - name: <study>                  # safe identifier, unique
        title / section / description: <text>
        start_from: previous | none | <earlier study>
        objective: ...                 # optional, over the profile's and the file's
        advance: {...}                 # optional, key by key over the profile's and the file's
        baseline: <variant>            # the incumbent of advance: significant (default: the
                                       #   variant whose config is the inherited one)
        pin: {set: {<key>: value}, reason: <text>}  # forced on top of the inherited winner
        seeds: N | [s, ...]            # default [0]; a search study takes a single seed
             | {min: N, max: M, step: 2}   # adaptive seeds (ablations.adaptive)
        # exactly one of:
        grid: {<key>: [values]} | [{<key>: [values]}, ...]   # cartesian product(s)
        variants: [{name: <name>, set: {<key>: value}}, ...]
        search: {sampler: tpe|random|grid|cmaes, n_trials: N, pruner: none|median|hyperband,
                 space: {<key>: {type: loguniform|uniform|int|categorical,
                                 low, high, step, choices}}}
        report: {<variant>: {<metric>: number, ..., params: N, time: "h:mm"}}
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ablations import grid as grid_mod
from ablations import variants as variants_mod
from ablations.advance import check_advance
from ablations.checks import (check_config_keys, check_objective, check_report_entry,
                              check_safe_name, task_of)
from ablations.design_schema import (SearchModel, SearchPatchModel, SeedsAndGrid, VariantModel,
                                     design_keys)
from ablations.lineage import RESERVED_NAMES
from ablations.locate import fail, relay, suggest
from ablations.objective import Objective
from ablations.policies import check_checkpoints, check_identity
from ablations.strict import StrictModel
from ablations.yaml_source import LocatedError


class PinModel(StrictModel):
    set: Any
    reason: str

    @field_validator("set")
    @classmethod
    def _set(cls, v: Any, info: ValidationInfo) -> dict:
        check_config_keys(v, "pin.set", task_of(info))
        if not v:
            raise fail("pin.set must set at least one key")
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not v.strip():
            raise fail("a pin needs a non-empty reason (it is printed in the report)")
        return v.strip()


def _objective(v: Any, info: ValidationInfo) -> Optional[Objective]:
    return None if v is None else check_objective(v, task_of(info))


def _advance(v: Any) -> Optional[dict]:
    return check_advance(v)


class StudyModel(SeedsAndGrid):
    name: str
    title: Optional[str] = None
    section: Optional[str] = None
    description: str = ""
    start_from: Optional[str] = None
    objective: Any = None
    pin: Optional[PinModel] = None
    variants: Optional[list[VariantModel]] = None
    search: Optional[SearchModel] = None
    report: dict[str, Any] = {}
    # issue 14: when the chain advances, and the incumbent it keeps (a variant's name, checked
    # against the variants a profile runs when the plan is built)
    advance: Any = None
    baseline: Optional[str] = None

    _advance = field_validator("advance")(_advance)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_safe_name(v, "study name")
        if v in RESERVED_NAMES:
            raise fail(f"'{v}' is reserved for start_from; pick another study name")
        return v

    _objective = field_validator("objective")(_objective)

    @field_validator("report")
    @classmethod
    def _report(cls, v: dict, info: ValidationInfo) -> dict:
        for key, entry in v.items():
            check_report_entry(entry, task_of(info), key)
        return v

    @field_validator("section", mode="before")
    @classmethod
    def _section(cls, v: Any) -> Any:
        # YAML reads "section: 1.10" as the number 1.1: its text is gone, so ask for quotes
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise fail(f"section must be text (got the number {v!r}; quote it: section: \"{v}\")")
        return v

    @model_validator(mode="after")
    def _one_design(self) -> "StudyModel":
        given = design_keys(self, ("grid", "variants", "search"))
        if len(given) > 1:
            raise fail(f"give exactly one of grid, variants, search (got {' and '.join(given)})",
                       given[1])
        if not given:
            raise fail("a study needs exactly one of grid, variants or search")
        if self.variants is not None:
            try:
                names = [v.name for v in variants_mod.expand_variants(
                    [v.model_dump() for v in self.variants])]
            except LocatedError as exc:
                raise relay(exc, "variants") from None
        elif self.grid is not None:
            names = [v.name for v in grid_mod.expand_grid(self.grid)]
        else:
            names = None  # search studies: report keys are free-form labels
        if names is not None:
            for key in self.report:
                if key not in names:
                    raise fail(f"report names unknown variant '{key}' (variants: "
                               f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''})",
                               "report", key, suggestion=suggest(key, names))
        return self


class TrimModel(SeedsAndGrid):
    only: Optional[list[str]] = None
    variants: Optional[list[VariantModel]] = None
    search: Optional[SearchPatchModel] = None

    @field_validator("only")
    @classmethod
    def _only(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None:
            if not v:
                raise fail("only must keep at least one variant")
            for j, name in enumerate(v):
                if name in v[:j]:
                    raise fail(f"variant '{name}' is listed twice", j)
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: Optional[list[VariantModel]]) -> Optional[list[VariantModel]]:
        if v is not None:
            try:
                variants_mod.expand_variants([x.model_dump() for x in v])
            except LocatedError as exc:
                raise relay(exc) from None
        return v

    @model_validator(mode="after")
    def _one_design(self) -> "TrimModel":
        given = design_keys(self, ("only", "grid", "variants", "search"))
        if len(given) > 1:
            raise fail(f"a trim gives at most one of only, grid, variants, search "
                       f"(got {' and '.join(given)})", given[1])
        return self


class ProfileModel(StrictModel):
    description: str = ""
    extends: Optional[str] = None
    objective: Any = None
    overrides: Any = {}
    studies: dict[str, TrimModel] = {}
    advance: Any = None  # issue 14

    _objective = field_validator("objective")(_objective)
    _advance = field_validator("advance")(_advance)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: Any, info: ValidationInfo) -> dict:
        return check_config_keys(v, "overrides", task_of(info))


class StudyFileModel(StrictModel):
    name: str
    task: Optional[str] = None  # loaded (and checked) before the file is validated
    objective: Any = None
    workspace: Optional[str] = None
    defaults: Any = {}
    default_profile: Optional[str] = None
    profiles: dict[str, ProfileModel] = {}
    studies: list[StudyModel]
    # -- workspace policies (issue 12; the keys' rules: ablations/policies.py) --
    checkpoints: Any = None
    identity: Any = None
    _checkpoints = field_validator("checkpoints")(check_checkpoints)
    _identity = field_validator("identity")(check_identity)
    advance: Any = None  # issue 14

    @classmethod
    def _config_home(cls) -> str:
        return "'defaults'"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_safe_name(v, "experiment name")

    _objective = field_validator("objective")(_objective)
    _advance = field_validator("advance")(_advance)

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, v: Any, info: ValidationInfo) -> dict:
        return check_config_keys(v, "defaults", task_of(info))

    @field_validator("profiles", mode="before")
    @classmethod
    def _profile_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for key in v:
                try:
                    check_safe_name(key, "profile name")
                except PydanticCustomError as exc:
                    raise fail(exc.context["message"], key) from None
        return v

    @field_validator("studies")
    @classmethod
    def _studies(cls, v: list) -> list:
        if not v:
            raise fail("studies must list at least one study")
        return v

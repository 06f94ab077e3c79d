"""The plain description of a study plan that the report needs.

``reports`` only needs a few facts about the study file: the study order, titles, report sections,
bases/pins, variants and the report's own numbers. :class:`ReportPlan` holds exactly those, so the
report can be rendered (and tested) without the study-file loader; :func:`plan_from_study_plan`
builds one from an ``ablations.StudyPlan`` by attribute access only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class RefNumbers:
    """The report's own numbers for one variant (any may be missing)."""
    grader: Optional[float] = None
    iou: Optional[float] = None
    si_logrmse: Optional[float] = None
    params: Optional[int] = None
    time: Optional[str] = None          # as printed in the report, e.g. "9:00" (h:mm)


@dataclass
class ReportStudy:
    name: str
    title: str = ""
    section: Optional[str] = None
    description: str = ""
    start_from: Optional[str] = None
    pin: Optional[dict] = None          # keys set over the inherited winner
    pin_reason: Optional[str] = None
    seeds: list[int] = field(default_factory=list)
    kind: str = ""
    variants: list[str] = field(default_factory=list)               # file order
    overrides: dict[str, dict] = field(default_factory=dict)        # variant -> overrides
    report: dict[str, RefNumbers] = field(default_factory=dict)     # variant -> report numbers


@dataclass
class ReportPlan:
    name: str
    profile: str
    studies: list[ReportStudy]
    file: Optional[str] = None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _opt_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _ref(numbers: Any) -> RefNumbers:
    if isinstance(numbers, RefNumbers):
        return numbers
    params = _get(numbers, "params")
    time = _get(numbers, "time")
    return RefNumbers(grader=_opt_float(_get(numbers, "grader")), iou=_opt_float(_get(numbers, "iou")),
                      si_logrmse=_opt_float(_get(numbers, "si_logrmse")),
                      params=None if params is None else int(params),
                      time=None if time is None else str(time))


def _profile_name(profile: Any) -> str:
    if profile is None:
        return "default"
    if isinstance(profile, str):
        return profile
    return str(_get(profile, "name", profile))


def study_from_spec(spec: Any) -> ReportStudy:
    """One ``ablations.StudySpec`` (or any object/dict with the same attribute names)."""
    pin = _get(spec, "pin")
    pin_set = _get(pin, "set") if pin is not None else None
    variants, overrides = [], {}
    for variant in _get(spec, "variants") or []:
        name = str(_get(variant, "name"))
        variants.append(name)
        overrides[name] = dict(_get(variant, "overrides") or {})
    report = {str(k): _ref(v) for k, v in (_get(spec, "report") or {}).items()}
    section = _get(spec, "section")
    return ReportStudy(
        name=str(_get(spec, "name")), title=str(_get(spec, "title") or ""),
        section=None if section is None else str(section),
        description=str(_get(spec, "description") or ""),
        start_from=_get(spec, "start_from"),
        pin=dict(pin_set) if pin_set else None,
        pin_reason=_get(pin, "reason") if pin is not None else None,
        seeds=[int(s) for s in (_get(spec, "seeds") or [])], kind=str(_get(spec, "kind") or ""),
        variants=variants, overrides=overrides, report=report)


def plan_from_study_plan(plan: Any) -> ReportPlan:
    """Build a :class:`ReportPlan` from an ``ablations.StudyPlan`` (attribute access only)."""
    if isinstance(plan, ReportPlan):
        return plan
    file = _get(plan, "file")
    return ReportPlan(name=str(_get(plan, "name")), profile=_profile_name(_get(plan, "profile")),
                      studies=[study_from_spec(s) for s in _get(plan, "studies") or []],
                      file=None if file is None else str(file))


def display_file(plan: ReportPlan) -> Optional[str]:
    """The study file's name without the machine-specific directory (keeps output portable)."""
    return Path(plan.file).name if plan.file else None

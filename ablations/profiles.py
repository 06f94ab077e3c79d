"""Profiles: the same studies at another scale (``smoke``, ``full``), as a file's ``profiles:``.

Why a module: a profile is resolved along its ``extends`` chain, root first: overrides land on
``defaults`` in that order, a child's study trims apply over its parent's, and the nearest
``objective`` wins. These rules are checked for every profile of a file (not only the one asked
for), so a broken profile fails before any trial starts.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ablations.locate import suggest
from ablations.objective import Objective
from ablations.schema import StudyFileModel, TrimModel
from ablations.task import Task
from ablations.yaml_source import KeyPath, YamlDocument

DESIGN = ("only", "grid", "variants", "search")
_REPLACING = ("grid", "variants", "search")  # trim fields that replace the study's design


def check_profiles(doc: YamlDocument, model: StudyFileModel, studies: Mapping[str, int]) -> None:
    """``default_profile``, every ``extends`` and every trim's study exist; no extends cycle."""
    profiles = model.profiles
    if model.default_profile is not None and model.default_profile not in profiles:
        raise doc.error(("default_profile",), f"unknown profile "
                        f"'{model.default_profile}' (profiles: "
                        f"{', '.join(profiles) or 'none'})",
                        suggest(model.default_profile, profiles))
    for pname, prof in profiles.items():  # every parent exists before any chain is walked
        if prof.extends is not None and prof.extends not in profiles:
            raise doc.error(("profiles", pname, "extends"),
                            f"extends unknown profile '{prof.extends}'",
                            suggest(prof.extends, profiles))
    for pname, prof in profiles.items():
        profile_chain(doc, model, pname)
        for sname in prof.studies:
            if sname not in studies:
                raise doc.error(("profiles", pname, "studies", sname),
                                f"trim names unknown study '{sname}'", suggest(sname, studies))


def profile_chain(doc: YamlDocument, model: StudyFileModel, pname: Optional[str]) -> list[str]:
    """``pname`` and the profiles it extends, root first (empty for no profile)."""
    if pname is None:
        return []
    chain = [pname]
    while (parent := model.profiles[chain[-1]].extends) is not None:
        if parent in chain:
            raise doc.error(("profiles", chain[-1], "extends"),
                            f"profiles extend each other in a cycle: "
                            f"{' -> '.join(chain + [parent])}")
        chain.append(parent)
    return chain[::-1]


def profile_config(doc: YamlDocument, model: StudyFileModel,
                   pname: Optional[str]) -> tuple[dict, dict[str, KeyPath]]:
    """``defaults`` then each profile's ``overrides`` along the chain; and where each key was set."""
    base: dict = {}
    sources: dict[str, KeyPath] = {}
    for key, value in model.defaults.items():
        base[key], sources[key] = value, ("defaults", key)
    for p in profile_chain(doc, model, pname):
        for key, value in model.profiles[p].overrides.items():
            base[key], sources[key] = value, ("profiles", p, "overrides", key)
    return base, sources


def profile_objective(doc: YamlDocument, model: StudyFileModel, pname: Optional[str],
                      task: Task) -> Objective:
    """The nearest ``objective:`` of the profile chain (the child's first), else the file's, else
    the task's default."""
    for p in reversed(profile_chain(doc, model, pname)):
        if model.profiles[p].objective is not None:
            return model.profiles[p].objective
    return model.objective if model.objective is not None else task.objective


def trims(doc: YamlDocument, model: StudyFileModel,
          pname: Optional[str]) -> dict[str, dict[str, tuple[Any, KeyPath]]]:
    """study -> trim field -> (value, path), the profile's parents applied first: a trim that
    gives a new design drops the parent's; a search trim merges over the parent's search."""
    out: dict[str, dict[str, tuple[Any, KeyPath]]] = {}
    for p in profile_chain(doc, model, pname):
        for sname, trim in model.profiles[p].studies.items():
            eff = out.setdefault(sname, {})
            tpath = ("profiles", p, "studies", sname)
            given = {f: getattr(trim, f) for f in TrimModel.model_fields
                     if getattr(trim, f) is not None}
            if "search" in given and "search" in eff:
                parent = eff["search"][0]
                given["search"] = {**parent, **dump(given["search"])}
            elif "search" in given:
                given["search"] = dump(given["search"])
            if any(f in _REPLACING for f in given):
                for f in DESIGN:
                    eff.pop(f, None)
            for f, value in given.items():
                eff[f] = (value, tpath + (f,))
    return out


def dump(model: Any) -> dict:
    """The keys a schema model was given (a trim's search patch merges only those)."""
    return model.model_dump(exclude_none=True)

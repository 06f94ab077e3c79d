"""Locating errors: a pydantic ValidationError becomes ``file:line: key.path: message``.

Why a module: every mistake in a study file is reported at its line and key (exit code 2), and
the checks live in several places (the schema's models, the task's Config, the plan builder).
Pydantic's error ``loc`` is a key path into the parsed data; :func:`validate_at` joins it with
:class:`~ablations.yaml_source.YamlDocument`'s line map. Checks that pydantic cannot express raise
:func:`fail`'s ``PydanticCustomError("ablate", ...)``, whose context carries the sub-path of the
offending element and an optional "did you mean" suggestion.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from ablations.errors import StudyFileError
from ablations.yaml_source import KeyPath, LocatedError, YamlDocument


def fail(message: str, *path: Any, suggestion: Optional[str] = None) -> PydanticCustomError:
    """A pydantic error carrying a sub-path (relative to the validated value) and a suggestion."""
    return PydanticCustomError("ablate", "{message}",
                               {"message": message, "path": tuple(path), "suggestion": suggestion})


def relay(exc: LocatedError, *prefix: Any) -> PydanticCustomError:
    """A helper's LocatedError as a pydantic error, its path under ``prefix``."""
    return fail(exc.message, *prefix, *exc.path, suggestion=exc.suggestion)


def suggest(word: Any, candidates: Any) -> Optional[str]:
    """The closest of ``candidates`` to ``word``, if one is close enough to be a typo."""
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def validate_at(doc: YamlDocument, path: KeyPath, model: type[BaseModel], data: Any,
                context: Optional[Mapping[str, Any]] = None) -> Any:
    """``model.model_validate(data, context=context)``; errors become a StudyFileError at the
    right line (``path`` is where ``data`` sits in the document)."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise to_study_error(doc, tuple(path), exc) from None


def to_study_error(doc: YamlDocument, base: KeyPath, exc: ValidationError) -> StudyFileError:
    """The first (by line) of a pydantic ValidationError's errors as a StudyFileError."""
    found = []
    for err in exc.errors():
        path = tuple(base) + tuple(err["loc"])
        ctx = err.get("ctx") or {}
        suggestion = None
        if err["type"] == "ablate":
            path += tuple(ctx.get("path", ()))
            message, suggestion = ctx["message"], ctx.get("suggestion")
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"]
            value = err.get("input")
            if isinstance(value, (str, int, float, bool)) or value is None:
                message += f" (got {value!r})"
        found.append((doc.line_for(path) or 0, len(found), path, message, suggestion))
    line, _, path, message, suggestion = min(found)
    return doc.error(path, message, suggestion)

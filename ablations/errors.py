"""Errors that mean "the user's input is wrong" (exit code 2), as opposed to a failed trial."""
from __future__ import annotations

from typing import Optional


class InputError(Exception):
    """Bad input from the user: study file, CLI argument, config or data set. Exit code 2."""

    exit_code = 2


class StudyFileError(InputError):
    """A study file problem, located by file, line and key so the user can jump to it."""

    def __init__(self, file: str, message: str, *, line: Optional[int] = None,
                 key: Optional[str] = None, suggestion: Optional[str] = None):
        self.file, self.line, self.key, self.suggestion = file, line, key, suggestion
        self.message = message
        where = file if line is None else f"{file}:{line}"
        text = f"{where}: " + (f"{key}: " if key else "") + message
        if suggestion:
            text += f" (did you mean '{suggestion}'?)"
        super().__init__(text)

"""Errors that mean "the user's input is wrong" (exit code 2), as opposed to a failed trial."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Union


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


@contextmanager
def writing(option: str, path: Union[str, os.PathLike], *, inside: bool = False) -> Iterator[None]:
    """Turn an OSError of writing the user-named ``path`` into an InputError (exit 2) that names
    the option and the path, like every other bad argument: ``--output out.csv: cannot write
    there (Is a directory)``, not a traceback.

    Without ``inside`` the block only writes ``path``: every OSError in it is about ``path``. With
    ``inside`` (a directory such as a workspace, the block training or reading data too) only an
    OSError naming a file in that directory is; any other is re-raised as it is.
    """
    try:
        yield
    except OSError as exc:
        if inside and not _within(exc.filename, path):
            raise
        # the file in the directory; for a file, its path is named already (the OSError may name
        # the atomic writer's temporary file beside it, which the user never asked for)
        named = f": {exc.filename}" if inside and str(exc.filename) != str(path) else ""
        raise InputError(f"{option} {path}: cannot write there "
                         f"({exc.strerror or type(exc).__name__}{named})") from None


def _within(name: Union[str, os.PathLike, None], directory: Union[str, os.PathLike]) -> bool:
    if name is None:
        return False
    top = os.path.abspath(directory)
    return os.path.commonpath([os.path.abspath(name), top]) == top

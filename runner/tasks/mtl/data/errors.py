"""Data-set errors.

A broken or inconsistent data set is a user input problem (exit code 2), not a failed trial, so
``DataError`` derives from ``InputError``. Every message names the file or directory at fault and
what was expected there, so the user can go and fix that one file.
"""
from __future__ import annotations

from ablations.errors import InputError


class DataError(InputError):
    """The data set on disk (or a cache built from it) is missing, corrupt or inconsistent."""

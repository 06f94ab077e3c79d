"""Store URLs in messages: the password masked, and the one-line bad-input error for a store that
cannot be used. A shared leaf: the result store's and Optuna's options (runner.orchestrate) and the
tracking store's (runner.tracking) all say ``<option> <url>: <problem>: <reason>`` the same way.
"""
from __future__ import annotations

from typing import Optional

from ablations.errors import InputError


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: shown as given
        return url


def store_error(option: str, url: str, exc: BaseException, problem: str = "cannot open the database",
                hint: str = "") -> InputError:
    """The bad-input error (exit 2) for a store URL that cannot be used: ``<option> <url>:
    <problem>: <reason><hint>``, the password masked in the URL and in the reason. The reason is the
    first non-empty line of the driver's error (of ``exc`` itself when it wraps none), else the
    exception's type name; a missing driver module (ImportError) says so."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    if isinstance(exc, ImportError):
        reason = f"its database driver is not installed ({reason})"
    password = _password(url)
    if password and len(password) >= 3:  # a driver may echo the URL or DSN back
        reason = reason.replace(password, "***")
    return InputError(f"{option} {safe_url(url)}: {problem}: {reason[:300]}{hint}")


def _password(url: str) -> Optional[str]:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password or None
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses
        return None

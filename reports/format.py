"""Text formatting of the report: numbers, intervals, durations, parameter counts, tables.

Pure and locale-free (fixed digits, no clock), so the same input gives the same bytes.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Optional, Sequence

from ablations.stats import Sample

DASH = "—"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x: Optional[float], digits: int = 3) -> str:
    if _missing(x):
        return DASH
    return f"{float(x):.{digits}f}"


def fmt_gain(x: Optional[float], digits: int = 3) -> str:
    """A signed difference: "+21.500", "-0.125"."""
    return DASH if _missing(x) else f"{float(x):+.{digits}f}"


def fmt_sample(s: Optional[Sample], digits: int = 3) -> str:
    """"43.125" for one seed, "43.125 ± 0.512" (sample std) for several."""
    if s is None:
        return DASH
    if s.std is None:
        return fmt(s.mean, digits)
    return f"{fmt(s.mean, digits)} ± {fmt(s.std, digits)}"


def fmt_ci(s: Optional[Sample], digits: int = 3) -> str:
    if s is None or s.ci_low is None:
        return DASH
    return f"[{fmt(s.ci_low, digits)}, {fmt(s.ci_high, digits)}]"


def fmt_duration(seconds: Optional[float]) -> str:
    """h:mm:ss from one hour on, else m:ss."""
    if _missing(seconds):
        return DASH
    total = int(round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_params(n: Optional[int]) -> str:
    return DASH if n is None else f"{int(n):,}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def fmt_value(v: Any) -> str:
    """A config value as JSON (sorted keys): the same text for the same value."""
    return json.dumps(v, sort_keys=True)


def cell(text: object) -> str:
    """One table cell: on one line, its pipes escaped."""
    return str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def slug(name: str) -> str:
    """A file name for a study's figure."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "study"


def first_line(text: Optional[str], limit: int = 240) -> str:
    """The line of an error message that says what went wrong."""
    if not text:
        return "(no error message)"
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    # a traceback's last line names the exception; otherwise the first line is the message
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "no trials"

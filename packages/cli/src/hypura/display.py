"""How the Ollama-style commands print: borderless tables, human sizes, numbers, times and durations.

The formats follow what ``ollama`` prints (decimal units, ``4 minutes from now``, left-aligned columns
four spaces apart), so habits and scripts that read its output carry over.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import IO


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, out: IO[str] | None = None,
          pad: str = "    ") -> str:
    """Left-aligned columns, `pad` between them, no borders, no trailing spaces; printed to `out` if given."""
    all_rows = ([list(header)] if header else []) + [list(r) for r in rows]
    width = max((len(r) for r in all_rows), default=0)
    all_rows = [r + [""] * (width - len(r)) for r in all_rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(width)]
    text = "".join(pad.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in all_rows)
    if out is not None:
        out.write(text)
    return text


def human_bytes(n: float) -> str:
    """Decimal units, as Ollama: ``253 MB``, ``1.5 GB``, ``17 GB``, ``512 B``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            value = n / size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{int(n)} B"


def human_number(n: float) -> str:
    """Parameter counts: ``268.10M``, ``8B``, ``7.6B``, ``12K``."""
    for unit, size, digits in (("B", 1e9, 1), ("M", 1e6, 2)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == math.floor(value) else f"{value:.{digits}f}{unit}"
    return f"{n / 1e3:.0f}K" if n >= 1e3 else str(int(n))


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes = s // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    for unit, h, limit in (("days", 24, 24 * 14), ("weeks", 24 * 7, 24 * 60), ("months", 24 * 30, 24 * 730)):
        if hours < limit:
            return f"{hours // h} {unit}"
    return f"{int(seconds / (365 * 86400))} years"


def human_time(when: str | float | None, zero: str = "Never", now: float | None = None) -> str:
    """``4 weeks ago``, ``4 minutes from now``, ``Forever`` (20+ years ahead); `when` is RFC 3339 or a timestamp."""
    if not when:
        return zero
    ts = when if isinstance(when, (int, float)) else parse_rfc3339(when)
    delta = (time.time() if now is None else now) - ts
    if delta < -20 * 365 * 86400:
        return "Forever"
    return f"{_span(-delta)} from now" if delta < 0 else f"{_span(delta)} ago"


def parse_rfc3339(text: str) -> float:
    """A timestamp from the API's RFC 3339 times (nanosecond fractions and ``Z`` allowed)."""
    text = text.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:   # datetime takes at most 6 fraction digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(text).timestamp()


def go_duration(ns: int) -> str:
    """A duration as Go prints one (``1.234567s``, ``12.5ms``, ``850µs``): Ollama's ``--verbose`` timings."""
    if ns >= 60e9:
        m, s = divmod(ns / 1e9, 60)
        return f"{int(m)}m{s:.6g}s"
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return f"{ns / size:.6g}{unit}"
    return f"{int(ns)}ns"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"

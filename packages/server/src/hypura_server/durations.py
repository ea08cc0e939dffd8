"""Ollama's duration vocabulary: ``keep_alive`` values and RFC 3339 timestamps."""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from .errors import bad_request

_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
FOREVER = float("inf")
MAX_KEEP_ALIVE_S = 9_223_372_036.0   # Go's largest time.Duration (~292 years), as Ollama's parser


def parse_keep_alive(value: Any, default: float) -> float:
    """Seconds to keep a model loaded after a request: a number of seconds or a Go duration string
    (``"5m"``, ``"1h30m"``, ``"-1"``); negative means forever, 0 unloads at once. None → `default`.
    NaN, infinities and more than Go's largest duration (``1e308``) → 400."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_request("keep_alive must be a number or a duration string")
    if isinstance(value, (int, float)):
        seconds = float(value) if isinstance(value, float) or abs(value) < 1 << 64 else math.inf
    elif isinstance(value, str):
        if len(value) > 64:   # no duration is longer; also keeps the scan below linear
            raise bad_request("invalid keep_alive duration: too long")
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        try:
            seconds = sign * float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNIT_S[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise bad_request(f"invalid keep_alive duration {value!r}") from None
            seconds *= sign
    else:
        raise bad_request("keep_alive must be a number or a duration string")
    if not math.isfinite(seconds) or abs(seconds) > MAX_KEEP_ALIVE_S:
        raise bad_request(f"keep_alive {value!r} is out of range (a finite duration of at most "
                          f"{MAX_KEEP_ALIVE_S:.0f} s; negative keeps the model loaded)")
    return FOREVER if seconds < 0 else seconds


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


def rfc3339(t: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z`` (UTC); what Ollama's clients parse."""
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def from_timestamp(ts: float) -> str:
    return rfc3339(datetime.fromtimestamp(ts, timezone.utc))

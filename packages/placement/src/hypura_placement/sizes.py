"""Byte sizes: parse ``8G`` / ``512M`` / ``16GiB`` / ``1.5T`` / ``123``, and format them back."""
from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
SIZE_HELP = "bytes, or with a binary unit: 512M, 8G, 16GiB, 1.5T (K/M/G/T = KiB/MiB/GiB/TiB; KB/MB/GB/TB are decimal)"


def parse_size(text: str | int) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"16GiB"``, ``"1.5T"``, ``"123"`` (or a non-negative int).

    K/M/G/T/P with or without ``iB`` are binary (``8G`` = 8 GiB = 8·1024³); ``KB``/``MB``/``GB``/``TB``
    are decimal. Raises ValueError for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 8G, 512M, 16GiB)")
    number, unit, binary, b = m.groups()
    if binary and not unit:
        raise ValueError(f"not a size: {text!r} (examples: 8G, 512M, 16GiB)")
    scale = _UNITS[unit.lower()]
    if unit and b and not binary:
        scale = 1000 ** ("kmgtp".index(unit.lower()) + 1)
    return int(float(number) * scale)


def format_size(n: float) -> str:
    """``1536`` → ``1.5 KiB``; binary units, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}" if abs(n) < 100 else f"{n:.0f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover

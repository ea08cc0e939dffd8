"""Routing statistics kept between runs, for the expert cache's warm start.

Stored as JSON in the user cache directory (never beside or inside the model file), one file per
model, keyed by the file's size and the SHA-256 of its first, middle and last MiB (the GGUF header and
metadata, and weights: two files with one header, e.g. the same architecture and tokenizer with other
weights, must not share statistics): a renamed copy keeps its statistics, a different file gets its own. Counts from earlier runs are
halved when a run's counts are added, so the statistics follow what the model is used for now.
Stale or unreadable statistics only cost warmth, never correctness.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from hypura_hardware.files import write_json_atomic

log = logging.getLogger(__name__)
VERSION = 1


def stats_path(model_path: str | os.PathLike) -> Path:
    from hypura_hardware import user_cache_dir

    p = Path(model_path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for at in sorted({0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))}):
            f.seek(at)
            h.update(f.read(1 << 20))
    key = f"{size}-{h.hexdigest()[:32]}"
    return user_cache_dir() / "routing" / f"{key}.json"


def load_counts(model_path: str | os.PathLike) -> dict[int, dict[int, int]]:
    """{layer: {expert: count}} from earlier runs of this model ({} if none or unreadable)."""
    try:
        return _read(stats_path(model_path))
    except OSError:
        return {}


def _read(path: Path) -> dict[int, dict[int, int]]:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION:
            return {}
        return {int(layer): {int(e): int(n) for e, n in row.items()} for layer, row in data["counts"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save_counts(model_path: str | os.PathLike, counts: dict[int, dict[int, int]]) -> Path | None:
    """Add this run's counts to the stored ones (those halved) and write them atomically."""
    if not any(counts.values()):
        return None
    try:
        path = stats_path(model_path)
        merged: dict[int, dict[int, int]] = {}
        for layer, row in _read(path).items():
            merged[layer] = {e: n // 2 for e, n in row.items() if n // 2 > 0}
        for layer, row in counts.items():
            dst = merged.setdefault(int(layer), {})
            for e, n in row.items():
                dst[int(e)] = dst.get(int(e), 0) + int(n)
        return write_json_atomic(path, {"version": VERSION, "model": str(Path(model_path).name),
                                        "counts": {str(k): {str(e): n for e, n in sorted(v.items())}
                                                   for k, v in sorted(merged.items())}})
    except OSError as exc:
        log.warning("could not store routing statistics: %s", exc)
        return None

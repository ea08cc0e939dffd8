"""A GGUF file's header as the API reports it: key/values (long arrays elided) and tensor shapes.

Parsing is `hypura_placement.read_header`'s — the bounded, hostile-input-safe reader that also guards
llama.cpp — so a malformed file in the models directory is one clear ValueError here, never an
exception that takes down a listing (`/api/tags`) of every other model.
"""
from __future__ import annotations

from typing import Any

from hypura_placement import read_header as _parse

MAX_ARRAY = 64     # longer arrays (token lists, merges, scores) are reported as None


def read_header(path: str) -> tuple[dict[str, Any], list[tuple[str, list[int]]]]:
    """``(key/values, [(tensor name, shape)])`` of a GGUF file. Raises ValueError if it is not one."""
    h = _parse(path)
    kv = {k: None if isinstance(v, list) and len(v) > MAX_ARRAY else v for k, v in h.kv.items()}
    return kv, [(t.name, list(t.shape)) for t in h.tensors]

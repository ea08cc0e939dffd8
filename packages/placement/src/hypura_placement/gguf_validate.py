"""Is a GGUF safe to hand to llama.cpp? :func:`validate_gguf` and the hyper-parameter checks.

llama.cpp aborts (``GGML_ASSERT``), not throws, on some malformed files, so the engine checks a file here
first, from its header alone (:mod:`.gguf_file`): hyper-parameters llama.cpp asserts on, overlapping
tensors, data cut short, header-only files.
"""
from __future__ import annotations

import os
from typing import Any

from .gguf_file import GGUFError, GGUFHeader, read_header

LLAMA_MAX_LAYERS = 512          # llama.cpp's limits (src/llama-hparams.h), asserted (= abort) at load
LLAMA_MAX_EXPERTS = 1024


def _count(kv: dict[str, Any], key: str) -> int | None:
    """An integer hyper-parameter, or the largest entry of a per-layer array of them."""
    v = kv.get(key)
    if isinstance(v, list):
        v = max((x for x in v if isinstance(x, int) and not isinstance(x, bool)), default=None)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def check_hparams(h: GGUFHeader) -> None:
    """The hyper-parameter checks llama.cpp makes with ``GGML_ASSERT`` in ``load_hparams`` (an abort, not an
    error, if they fail): layer and expert counts in range and consistent. Raises :class:`GGUFError`."""
    arch = h.kv.get("general.architecture")
    if not isinstance(arch, str):
        return
    kv = h.kv

    def bad(msg: str) -> GGUFError:
        return GGUFError(f"{h.path}: bad header: {msg}")
    n_layer = _count(kv, f"{arch}.block_count")
    if n_layer is not None and not 0 < n_layer <= LLAMA_MAX_LAYERS:
        raise bad(f"{arch}.block_count {n_layer} is outside 1..{LLAMA_MAX_LAYERS}")
    nextn = _count(kv, f"{arch}.nextn_predict_layers") or 0
    if n_layer is not None and not 0 <= nextn <= n_layer:
        raise bad(f"{arch}.nextn_predict_layers {nextn} exceeds the block count {n_layer}")
    n_expert = _count(kv, f"{arch}.expert_count") or 0
    used = _count(kv, f"{arch}.expert_used_count") or 0
    groups = _count(kv, f"{arch}.expert_group_count") or 0
    group_used = _count(kv, f"{arch}.expert_group_used_count") or 0
    if not 0 <= n_expert <= LLAMA_MAX_EXPERTS:
        raise bad(f"{arch}.expert_count {n_expert} is outside 0..{LLAMA_MAX_EXPERTS}")
    if not 0 <= used <= n_expert or (n_expert > 0 and used == 0):
        raise bad(f"{arch}.expert_used_count {used} does not fit expert_count {n_expert}")
    if n_expert > 0:
        if not 0 <= groups < n_expert or groups > 1 and (n_expert % groups or not 0 < group_used < groups):
            raise bad(f"{arch}: expert groups {groups} (used {group_used}) do not divide {n_expert} experts")
    elif groups:
        raise bad(f"{arch}.expert_group_count {groups} without experts")
    for key, v in kv.items():
        if key.endswith("_epsilon") and isinstance(v, float) and not 0.0 <= v < float("inf"):
            raise bad(f"{key} {v!r} is not a finite non-negative number")
    rope = kv.get(f"{arch}.rope.scaling.type")
    if isinstance(rope, str) and rope not in ("none", "linear", "yarn", "longrope"):
        raise bad(f"{arch}.rope.scaling.type {rope!r} is unknown")


def validate_gguf(path: str | os.PathLike, allow_header_only: bool = False) -> GGUFHeader:
    """Check that ``path`` is a complete, well-formed GGUF file and return its header.

    Raises :class:`GGUFError` (a ValueError) naming the file and the problem: missing, not GGUF,
    truncated (header cut, or tensor data past the end of the file), a hostile header (absurd counts
    or lengths, misaligned or overlapping tensors), or header-only (tensor table without data, or data
    cut anywhere after the tensor table; accepted when ``allow_header_only``: then ``complete`` is
    False, and the file can be inspected and planned, not run). A split set is checked shard by shard.
    Reads only the header: fast and bounded in memory for any file size.
    """
    h = read_header(path)
    check_hparams(h)
    for f in h.files:
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in f.tensors)
        for (_, end, name), (start, _, nxt) in zip(spans, spans[1:]):
            if start < end:
                raise GGUFError(f"{f.path}: bad header: tensors {name!r} and {nxt!r} overlap")
    if h.header_only:
        if not allow_header_only:
            raise GGUFError(f"{h.path}: header-only file (tensor table without data, written with "
                            f"--header-only): it can be inspected and planned, not run")
        return h
    for f in h.files:
        if f.data_end > f.file_size and not allow_header_only:
            last = max(f.tensors, key=lambda t: t.offset + t.nbytes)
            raise GGUFError(f"{f.path}: truncated: tensor {last.name!r} ends at byte {last.offset + last.nbytes} "
                            f"but the file has {f.file_size} bytes")
    return h

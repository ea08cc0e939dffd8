"""Which weights llama.cpp's default load repacks on the CPU, and the overrides that make an owned load do the same.

A default (`--mode resident`) load on the CPU puts every matmul weight whose type and shape the CPU backend's
extra buffer types accept (`CPU_REPACK` for Q4_0/Q4_K/IQ4_NL/…, others where built) into that buffer type,
whose storage has its own layout; results differ (validly) from plain storage. `init_from_user` never does
this on its own, but honours `tensor_buft_overrides` with any buffer type, so an owned load gets the same
storage from `repack_overrides`. `ggml_backend_tensor_set` into such a tensor converts the file's bytes, so
fills through it work unchanged; a raw read into repacked storage would be garbage.

The decision per weight is `hypura_llama.cpu_weight_buffer_type` (llama.cpp's own test: the op on a dummy
buffer of each extra type); this module says which op a tensor has (a MUL_MAT weight: 2-D; routed experts
`*_exps`: MUL_MAT_ID) and skips tensors llama.cpp uses otherwise (embeddings: GET_ROWS; norms, biases,
scales: element-wise). Only where the CPU computes: with a GPU every layer is offloaded and nothing repacks.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from hypura_llama import BufferType, cpu_weight_buffer_type, gpu_devices

# Weights llama.cpp does not use as a matmul's src0 (GET_ROWS tables, conv kernels, element-wise factors).
_NOT_MATMUL = re.compile(r"(^|\.)(token_embd|pos_embd|token_types|per_layer_token_embd|embed_tokens|d2t)\.|"
                         r"_ape\.|tid2eid|conv1d|norm|\.bias$|_b\.bias$|\.scale$|_scale$|sinks|rel_b")
_EXPERTS = re.compile(r"_exps\.weight$")
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def cpu_computes() -> bool:
    """Whether the CPU computes the model's layers in a default load (no GPU: every layer is offloaded
    when there is one, and only CPU weights are repacked)."""
    return not gpu_devices()


def repack_buffer_type(name: str, ggml_type: int, shape: tuple[int, ...], n_expert_used: int = 1) -> BufferType | None:
    """The CPU extra buffer type llama.cpp's default CPU load gives the weight `name` (None: plain memory)."""
    if len(shape) < 2 or _NOT_MATMUL.search(name):
        return None
    experts = bool(_EXPERTS.search(name))
    if len(shape) > 2 and any(int(n) > 1 for n in shape[2:]) and not experts:
        return None   # batched 3-D MUL_MAT weights (e.g. deepseek2's attn_k_b): never repacked
    return cpu_weight_buffer_type(ggml_type, shape, n_expert_used if experts else 1)


def repack_decisions(tensors: Iterable, n_expert_used: int = 1) -> dict[str, BufferType]:
    """{name: buffer type} for each tensor (objects with `name`, `ggml_type`, `shape`) that repacks."""
    out = {}
    for t in tensors:
        buft = repack_buffer_type(t.name, t.ggml_type, tuple(t.shape), n_expert_used)
        if buft is not None:
            out[t.name] = buft
    return out


def repack_overrides(decisions: Mapping[str, BufferType]) -> tuple[tuple[str, BufferType], ...]:
    """`tensor_buft_overrides` entries that put each named tensor in its buffer type: one pattern per
    (buffer type, name suffix), e.g. `^blk\\.(0|3|7)\\.ffn_up\\.weight$` (few patterns: llama.cpp compiles
    each for each tensor it creates)."""
    groups: dict[tuple[int, str], tuple[BufferType, list[str]]] = {}
    others: list[tuple[str, BufferType]] = []
    for name, buft in decisions.items():
        m = _LAYER.match(name)
        if m is None:
            others.append((rf"^{re.escape(name)}$", buft))
            continue
        key = (int(_handle(buft)), m.group(2))
        groups.setdefault(key, (buft, []))[1].append(m.group(1))
    out = [(rf"^blk\.({'|'.join(sorted(layers, key=int))})\.{re.escape(suffix)}$", buft)
           for (_, suffix), (buft, layers) in groups.items()]
    return tuple(out + others)


def _handle(buft: BufferType) -> int:
    from hypura_llama import ffi

    return int(ffi.cast("uintptr_t", buft.handle))


def by_buffer_type(decisions: Mapping[str, BufferType]) -> dict[int, tuple[BufferType, list[str]]]:
    """The decisions grouped by buffer type (key: its handle as an int)."""
    out: dict[int, tuple[BufferType, list[str]]] = {}
    for name, buft in decisions.items():
        out.setdefault(_handle(buft), (buft, []))[1].append(name)
    return out

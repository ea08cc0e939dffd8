"""Write a synthetic GGUF: header through ``gguf.GGUFWriter``, tensor data streamed in chunks (disk-bound).

Matrices whose row length is not a multiple of the block size fall back to F16; 1-D tensors and routers
are F32, as llama.cpp's quantizer leaves them. ``header_only`` writes the tensor table without any data and
marks the file with ``hypura.header_only = true``.
"""
from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFWriter, LlamaFileType
from tqdm import tqdm

from hypura_placement.gguf_file import HEADER_ONLY_KEY

from .data import f32_values, gain_for_skew, make_rng, quant_chunks
from .presets import ArchShape, get_preset
from .tensors import TensorSpec, model_kv, tensor_specs
from .vocab import tokenizer_kv

QTYPES = {"F16": Q.F16, "Q8_0": Q.Q8_0, "Q4_0": Q.Q4_0}
FILE_TYPES = {"F16": LlamaFileType.MOSTLY_F16, "Q8_0": LlamaFileType.MOSTLY_Q8_0, "Q4_0": LlamaFileType.MOSTLY_Q4_0}


def _type_of(spec: TensorSpec, qtype: Q) -> Q:
    if spec.kind != "weight" or len(spec.shape) == 1:
        return Q.F32
    block = GGML_QUANT_SIZES[qtype][0]
    return qtype if spec.shape[0] % block == 0 else Q.F16


def _nbytes(shape: tuple[int, ...], t: Q) -> int:
    block, size = GGML_QUANT_SIZES[t]
    return math.prod(shape) // block * size


def _add_kv(w: GGUFWriter, key: str, value) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if 0 <= value < 1 << 32 else w.add_uint64(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, value)


def write_synthetic(path: str | os.PathLike, preset: str | ArchShape, *, layers: int | None = None,
                    scale: int = 1, experts: int | None = None, experts_used: int | None = None,
                    vocab: int | None = None, dense_lead: int | None = None, align: int | None = None,
                    qtype: str = "Q4_0",
                    header_only: bool = False, skew: float = 0.0, residual: float = 1.0, seed: int = 0,
                    progress: bool = False) -> Path:
    """Write a random-weight GGUF of ``preset`` (name or :class:`ArchShape`) scaled by the keyword arguments.

    ``qtype``: F16, Q8_0 or Q4_0. ``skew``: share of router selections aimed at the hottest 10% of experts
    (0 = uniform routing; 0.8 = ~80% where top-k allows). ``residual``: RMS gain of the projections that write
    into the residual stream (attention output, FFN and expert down); 1 keeps every sublayer's output as large as
    its input, so a token's hidden state — and its routing — changes wholly from layer to layer; below 1 the
    residual stream dominates, as in trained models, where the next layer's router applied to this layer's
    hidden state predicts most of its choices. ``seed`` makes the file reproducible.
    Returns the path. The data is generated and written chunk by chunk: memory stays bounded.
    """
    shape = get_preset(preset) if isinstance(preset, str) else preset
    shape = shape.scaled(layers=layers, scale=scale, experts=experts, experts_used=experts_used, vocab=vocab,
                         dense_lead=dense_lead, align=align)
    if qtype not in QTYPES:
        raise ValueError(f"unknown type {qtype!r}: one of {', '.join(QTYPES)}")
    if not 0.0 < residual <= 4.0:
        raise ValueError(f"residual gain {residual} outside (0, 4]")
    q = QTYPES[qtype]
    path = Path(path)
    specs = tensor_specs(shape)
    gain, share = gain_for_skew(shape.n_expert, shape.n_expert_used, skew) if shape.moe else (1.0, 0.0)
    w = GGUFWriter(path, shape.arch)
    w.add_name(shape.name)
    w.add_file_type(int(FILE_TYPES[qtype]))
    w.add_quantization_version(2)
    for k, v in {**model_kv(shape), **tokenizer_kv(shape.n_vocab)}.items():
        _add_kv(w, k, v)
    w.add_string("hypura.synthetic.preset", shape.preset)
    w.add_uint32("hypura.synthetic.seed", seed)
    if shape.moe:
        w.add_float32("hypura.synthetic.skew", float(skew))
        w.add_float32("hypura.synthetic.router_gain", float(gain))
        w.add_float32("hypura.synthetic.hot_share_gaussian", float(share))
    if residual != 1.0:
        w.add_float32("hypura.synthetic.residual_gain", float(residual))
    if header_only:
        w.add_bool(HEADER_ONLY_KEY, True)
    types = [_type_of(s, q) for s in specs]
    for s, t in zip(specs, types):
        w.add_tensor_info(s.name, tuple(reversed(s.shape)), np.dtype(np.float32), _nbytes(s.shape, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    try:
        if not header_only:
            _write_data(w, specs, types, shape, gain, seed, progress, residual)
    finally:
        w.close()
    return path


def _ahead(chunks: Iterator[memoryview]) -> Iterator[memoryview]:
    """Generate the next chunk in a thread while the caller writes this one (numpy and write release the GIL)."""
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(next, chunks, None)
        while (chunk := nxt.result()) is not None:
            nxt = pool.submit(next, chunks, None)
            yield chunk


RESIDUAL_WRITERS = re.compile(r"\.(attn_output|ffn_down|ffn_down_exps|ffn_down_shexp)\.weight$")


def _write_data(w: GGUFWriter, specs: list[TensorSpec], types: list[Q], shape: ArchShape, gain: float,
                seed: int, progress: bool, residual: float = 1.0) -> None:
    fout = w.fout[0]
    align = w.data_alignment
    total = sum(_nbytes(s.shape, t) for s, t in zip(specs, types))
    rng = make_rng(seed)
    hot_n = max(1, math.ceil(0.1 * shape.n_expert)) if shape.moe else 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"writing {Path(fout.name).name}",
              file=sys.stderr, disable=not progress) as bar:
        for s, t in zip(specs, types):
            pad = -fout.tell() % align
            fout.write(b"\0" * pad)
            if t == Q.F32:
                hot = rng.permutation(shape.n_expert)[:hot_n] if s.kind == "router" and gain != 1.0 else None
                data = f32_values(s.kind, s.shape, rng, hot, gain).tobytes()
                fout.write(data)
                bar.update(len(data))
                continue
            g = residual if RESIDUAL_WRITERS.search(s.name) else 1.0
            for chunk in _ahead(quant_chunks(t, math.prod(s.shape), s.shape[0], rng, g)):
                fout.write(chunk)
                bar.update(chunk.nbytes)
        fout.write(b"\0" * (-fout.tell() % align))

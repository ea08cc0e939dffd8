"""How fast llama.cpp's CPU kernels consume weights in a decode: bytes of weights a one-token pass reads per second.

A decoded token runs one matrix-vector product per weight matrix, so on a CPU its time is the weight bytes it
touches over the rate at which the kernels stream them. That rate is not the RAM bandwidth: on the 2-core box
the numpy copy measures ~25 GB/s while a resident Q4_0 decode consumes weights at well under half of that
(dequantising and dotting blocks costs more than fetching them). The planner's compute term needs the kernels'
rate, so this measures it where it is defined: a synthetic llama model (``hypura_synthetic``, Q4_0), loaded by
llama.cpp's default load (weights repacked where the CPU does that), decoding one token at a time on the default
threads; ``bytes / median token time``. Its weights must not fit the CPU's last-level cache, or the rate is the
cache's: a VM can report (and share) its host's whole L3 — 480 MiB on the 2-core box, where a 120 MB model gave
17.8 GB/s and 1.2 GB gave 9.2, what a 4.6 GB MoE's resident decode runs at. So the model has 4 layers (120 MB)
or as many more as 1.5 × the last-level cache takes (``hypura_hardware.last_level_cache_bytes``), at most 48.

The file is written to a temporary directory and removed. About 1 s, or 5 s with a 480 MiB L3, on the 2-core
box. `hypura profile` (through ``hypura_hardware.load_or_measure(decode_rate=...)``) stores the result as
``cpu.decode_bps``.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

SHAPE = dict(preset="llama3-70b", layers=4, scale=4, vocab=512)   # hidden 2048, FFN 7168: 120 MB of Q4_0
QTYPE = "Q4_0"
LAYER_BYTES = 30_000_000   # Q4_0 weights of one layer of SHAPE
CACHE_FACTOR = 1.5         # the model's weights are at least this many times the last-level cache
MAX_LAYERS = 48


def layers_for(llc_bytes: int | None, available_bytes: int | None = None) -> int:
    """Layers of SHAPE whose weights exceed CACHE_FACTOR × the last-level cache (SHAPE's 4 at least), and take
    at most a quarter of the available RAM (the file may be in a RAM-backed /tmp, and is loaded besides)."""
    need = -(-int(CACHE_FACTOR * (llc_bytes or 0)) // LAYER_BYTES)
    if available_bytes:
        need = min(need, available_bytes // 4 // LAYER_BYTES)
    return max(SHAPE["layers"], min(MAX_LAYERS, need))


def measure_decode_bps(tokens: int = 24, warmup: int = 4, n_threads: int = 0, workdir: Path | None = None) -> dict:
    """Decode ``tokens`` single tokens of a resident synthetic Q4_0 llama model; returns
    ``{"bps", "type", "weight_bytes", "token_s", "threads", "layers", "llc_bytes"}`` where ``bps`` = weight bytes
    a token touches ÷ the median token time. Raises RuntimeError when the binding is not built."""
    try:
        from hypura_llama import ContextParams, LlamaContext, LlamaModel, ModelParams, default_threads
        from hypura_hardware import last_level_cache_bytes, ram_info
        from hypura_placement import inspect_model
        from hypura_synthetic import write_synthetic
    except ImportError as exc:
        raise RuntimeError(f"cannot measure the decode rate: {exc}") from exc
    llc = last_level_cache_bytes()
    layers = layers_for(llc, ram_info().get("available"))
    with tempfile.TemporaryDirectory(prefix="hypura-decode-rate-", dir=workdir) as tmp:
        path = write_synthetic(Path(tmp) / "decode-rate.gguf", SHAPE["preset"], layers=layers,
                               scale=SHAPE["scale"], vocab=SHAPE["vocab"], qtype=QTYPE)
        touched = inspect_model(path).bytes_per_token()
        model = LlamaModel.load(path, ModelParams(n_gpu_layers=0))
        try:
            ctx = LlamaContext(model, ContextParams(n_ctx=tokens + warmup + 8, n_batch=8, n_ubatch=8,
                                                    n_threads=n_threads, op_offload=False))
            try:
                times = []
                for pos in range(warmup + tokens):
                    t0 = time.perf_counter()
                    ctx.decode([1 + pos % 100], pos)
                    ctx.logits()
                    if pos >= warmup:
                        times.append(time.perf_counter() - t0)
                threads = ctx.params.n_threads or default_threads()
            finally:
                ctx.close()
        finally:
            model.close()
    token_s = statistics.median(times)
    return {"bps": touched / token_s, "type": QTYPE, "weight_bytes": touched, "token_s": token_s,
            "threads": threads, "layers": layers, "llc_bytes": llc}

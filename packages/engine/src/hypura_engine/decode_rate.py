"""How fast llama.cpp's CPU kernels consume weights in a decode: bytes of weights a one-token pass reads per second.

A decoded token runs one matrix-vector product per weight matrix, so on a CPU its time is the weight bytes it
touches over the rate at which the kernels stream them. That rate is not the RAM bandwidth: on the 2-core box
the numpy copy measures ~25 GB/s while a resident Q4_0 decode consumes weights at well under half of that
(dequantising and dotting blocks costs more than fetching them). The planner's compute term needs the kernels'
rate, so this measures it where it is defined: a small synthetic llama model (``hypura_synthetic``, Q4_0, about
120 MB, larger than any CPU cache), loaded by llama.cpp's default load (weights repacked where the CPU does that),
decoding one token at a time on the default threads; ``bytes / median token time``.

The file is written to a temporary directory and removed. About 2 s on the 2-core box. `hypura profile` (through
``hypura_hardware.load_or_measure(decode_rate=...)``) stores the result as ``cpu.decode_bps``.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

SHAPE = dict(preset="llama3-70b", layers=4, scale=4, vocab=512)   # hidden 2048, FFN 7168: 120 MB of Q4_0
QTYPE = "Q4_0"


def measure_decode_bps(tokens: int = 24, warmup: int = 4, n_threads: int = 0, workdir: Path | None = None) -> dict:
    """Decode ``tokens`` single tokens of a resident synthetic Q4_0 llama model; returns
    ``{"bps", "type", "weight_bytes", "token_s", "threads"}`` where ``bps`` = weight bytes a token touches ÷ the
    median token time. Raises RuntimeError when the binding is not built."""
    try:
        from hypura_llama import ContextParams, LlamaContext, LlamaModel, ModelParams, default_threads
        from hypura_placement import inspect_model
        from hypura_synthetic import write_synthetic
    except ImportError as exc:
        raise RuntimeError(f"cannot measure the decode rate: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="hypura-decode-rate-", dir=workdir) as tmp:
        path = write_synthetic(Path(tmp) / "decode-rate.gguf", SHAPE["preset"], layers=SHAPE["layers"],
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
            "threads": threads}

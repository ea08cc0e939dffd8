"""Random tensor contents, generated fast and in chunks: valid values, zero mean, never repeating.

Quantized blocks are random bytes with their f16 scale rewritten: a fixed exponent (so no NaN/Inf and a
magnitude of ~1/sqrt(row length) per weight), random low mantissa bits and a random sign. The random sign
makes the mean zero even for Q4_0, whose codes (q - 8) alone average -0.5 (see DESIGN.md "Routing caveat").
F16 weights are random bits under a fixed exponent: uniform magnitudes in [2^e, 2^(e+1)), random sign.
"""
from __future__ import annotations

import math

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

CHUNK_BLOCKS = 1 << 21            # ~36-68 MiB of quantized data per chunk
_CODE_RMS = {Q.Q4_0: 4.61, Q.Q8_0: 73.9}   # RMS of (q - 8) for q in 0..15 / of int8 codes


def make_rng(seed: int) -> np.random.Generator:
    """The generator the writer uses: SFC64 gives random bytes at ~3 GB/s (PCG64's ``bytes`` ~0.2 GB/s)."""
    return np.random.Generator(np.random.SFC64(seed))


def random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random bytes as a writable uint8 array."""
    words = rng.integers(0, 2**64 - 1, size=-(-n // 8), dtype=np.uint64, endpoint=True)
    return words.view(np.uint8)[:n]


def _f16_bits(x: float) -> int:
    return int(np.array(x, dtype=np.float16).view(np.uint16))


def weight_std(row: int) -> float:
    """Target RMS of a weight whose rows have ``row`` elements (keeps activations O(1))."""
    return 1.0 / math.sqrt(row)


def quant_chunks(qtype: Q, n_elements: int, row: int, rng: np.random.Generator, gain: float = 1.0):
    """Yield byte chunks (memoryviews) of ``n_elements`` random weights of ``qtype`` (Q4_0 / Q8_0 / F16), their
    RMS ``gain`` × weight_std(row)."""
    std = weight_std(row) * gain
    if qtype == Q.F16:
        e = math.floor(math.log2(std / 1.53))               # RMS of U[1,2) is ~1.53
        fixed = _f16_bits(2.0 ** e) & 0x7C00
        step = CHUNK_BLOCKS * 16
        for start in range(0, n_elements, step):
            n = min(step, n_elements - start)
            bits = random_bytes(rng, 2 * n).view(np.uint16)
            bits &= 0x83FF
            bits |= fixed
            yield memoryview(bits).cast("B")
        return
    block, size = GGML_QUANT_SIZES[qtype]
    d16 = _f16_bits(std / _CODE_RMS[qtype]) & 0x7FC0        # exponent + top mantissa bits
    n_blocks = n_elements // block
    for start in range(0, n_blocks, CHUNK_BLOCKS):
        n = min(CHUNK_BLOCKS, n_blocks - start)
        raw = random_bytes(rng, n * size)
        scale = raw.view(np.uint16).reshape(n, size // 2)[:, 0]   # the f16 scale leads every block
        scale &= 0x803F
        scale |= d16
        yield memoryview(raw)


def f32_values(kind: str, shape: tuple[int, ...], rng: np.random.Generator, hot: np.ndarray | None = None,
               gain: float = 1.0) -> np.ndarray:
    """Small F32 tensors: ``norm`` ones, ``bias`` N(0, 0.02), ``zeros``, ``conv`` N(0, 1/k) for a kernel of width
    ``k``, ``neg`` -1 (a decay), ``router`` N(0, 1/sqrt(n_embd))
    with the rows of the ``hot`` experts scaled by ``gain`` (routing skew)."""
    n = math.prod(shape)
    if kind == "norm":
        return np.ones(n, dtype=np.float32)
    if kind == "zeros":
        return np.zeros(n, dtype=np.float32)
    if kind == "bias":
        return (rng.standard_normal(n) * 0.02).astype(np.float32)
    if kind == "conv":
        return (rng.standard_normal(n) / shape[0]).astype(np.float32)
    if kind == "neg":
        return -np.ones(n, dtype=np.float32)
    if kind == "router":
        w = rng.standard_normal((shape[1], shape[0])) * weight_std(shape[0])
        if hot is not None:
            w[hot] *= gain
        return w.astype(np.float32).ravel()
    raise ValueError(f"unknown f32 kind {kind!r}")


def hot_share(n_expert: int, n_used: int, gain: float, samples: int = 4000, seed: int = 1) -> float:
    """Share of top-k selections that go to the hottest 10% of experts when their router rows are scaled by
    ``gain`` (isotropic Gaussian hidden states; deterministic)."""
    hot = max(1, math.ceil(0.1 * n_expert))
    x = np.random.default_rng(seed).standard_normal((samples, n_expert))
    x[:, :hot] *= gain
    top = np.argpartition(-x, n_used - 1, axis=1)[:, :n_used] if n_used < n_expert else np.arange(n_expert)[None]
    return float((top < hot).mean())


def gain_for_skew(n_expert: int, n_used: int, skew: float) -> tuple[float, float]:
    """(gain, achieved share): the router gain that sends ``skew`` of the selections to the hottest 10% of
    experts (0 = uniform). Weights stay zero-mean, so a scaled-up router row wins only when its logit is
    positive: the reachable share is limited (Gaussian inputs: ~0.8 for 128 experts top-8 or more experts,
    ~0.43 for 64 top-8, ~0.2 for 8 top-2). The gain is capped at 64; the achieved share is returned."""
    if skew <= 0 or n_expert <= n_used:
        return 1.0, hot_share(n_expert, n_used, 1.0) if n_expert > n_used else 1.0
    lo, hi = 1.0, 64.0
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        if hot_share(n_expert, n_used, mid) < skew:
            lo = mid
        else:
            hi = mid
    return hi, hot_share(n_expert, n_used, hi)

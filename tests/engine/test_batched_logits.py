"""Are llama.cpp's logits for the rows of a batch bit-identical to those of the same tokens decoded one at a time?

Speculative decoding's greedy output equals plain decoding's only where they are. Measured here per type, with
and without CPU weight repacking, over several prompts and batch sizes 2..MAX; `speculative.exact_batch` (the
load-time probe that caps the default depth) must never claim more than this wider measurement finds.
On this build's x86 CPU backend: Gemma 3 270M Q4_K_M (repacked, the default) is exact up to 3 rows — its Q4_K
weights go through a 4-row GEMM (`ggml_gemm_q4_K_8x8_q8_K`) for each whole group of 4 rows; Q8_0 and Q4_0
weights are exact at every size measured; F16 weights at none (a GEMM for any batch of more than one row).
"""
from __future__ import annotations

import platform

import numpy as np
import pytest

from hypura_engine import LoadOptions, Runner
from hypura_engine.speculative import exact_batch
from hypura_llama import backend_name
from hypura_synthetic import write_synthetic

MAX = 9
PROMPTS = ("The quick brown fox jumps over the lazy dog", "def fib(n):\n    return", "Once upon a time")
X86_CPU = backend_name() == "cpu" and platform.machine() in ("x86_64", "AMD64")


def identical_sizes(path, repack: bool) -> tuple[list[int], int]:
    """Batch sizes whose rows equal single-token decoding for every prompt, and what the probe claims."""
    runner = Runner(path, LoadOptions(mode="resident", ctx=256, use_extra_bufts=repack))
    try:
        ctx, same = runner.ctx, {}
        for text in PROMPTS:
            toks = runner.tokenize(text)
            ctx.clear()
            ctx.decode(toks, 0)
            seq, single = [], []
            tok = int(np.argmax(ctx.logits()))
            for i in range(MAX):
                seq.append(tok)
                ctx.decode([tok], len(toks) + i)
                single.append(ctx.logits().copy())
                tok = int(np.argmax(single[-1]))
            for n in range(1, MAX + 1):
                assert ctx.truncate(len(toks))
                ctx.decode(seq[:n], len(toks), all_logits=True)
                ok = all(np.array_equal(ctx.logits(j), single[j]) for j in range(n))
                same[n] = same.get(n, True) and ok
        probe = exact_batch(ctx, runner.model, MAX)
    finally:
        runner.close()
    return [n for n in range(1, MAX + 1) if same[n]], probe


def _prefix_len(sizes: list[int]) -> int:
    n = 0
    while n + 1 in sizes:
        n += 1
    return n


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("batched")
    return {q: write_synthetic(d / f"{q}.gguf", "llama3-70b", layers=2, scale=16, vocab=512, qtype=q)
            for q in ("F16", "Q8_0", "Q4_0")}


@pytest.mark.parametrize("repack", [True, False], ids=["repacked", "not-repacked"])
def test_default_model(default_model, repack):
    sizes, probe = identical_sizes(default_model, repack)
    assert 1 in sizes                        # single-token decoding is deterministic
    assert probe <= _prefix_len(sizes)       # the probe is never optimistic
    if X86_CPU:
        assert _prefix_len(sizes) == (3 if repack else 7), sizes
        assert probe == _prefix_len(sizes)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0"])
def test_synthetic_types(synthetic, qtype):
    sizes, probe = identical_sizes(synthetic[qtype], True)
    assert 1 in sizes and probe <= _prefix_len(sizes)
    if X86_CPU:
        assert _prefix_len(sizes) == (1 if qtype == "F16" else MAX), sizes
        assert probe == _prefix_len(sizes)

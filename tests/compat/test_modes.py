"""Every streaming mode on every architecture's real-format files: the resident reference's greedy tokens, or a
clear one-line refusal naming the reason — never different tokens, never a crash (issue 14, items 4 and 5).

Today several cells are refusals (split sets, per-expert side tensors, architectures the streamers do not take
yet); ``tools/compat_matrix.py`` writes the full matrix into docs/COMPATIBILITY.md.
"""
from __future__ import annotations

import json

import pytest

from hypura_synthetic import COMPAT
from hypura_synthetic.compat import MODES, _cli, _plan, check_file, streaming_budget

CASES = ([(p, "Q4_K_M") for p in COMPAT] + [("gpt-oss-20b", "MXFP4_MOE"), ("mixtral-8x7b", "F16"),
                                             ("mixtral-8x7b", "Q4_K_M-split"), ("kimi-k2", "IQ4_XS")])


# The matrix's streaming budget gives the expert cache a whole layer's experts (of two or more streamed layers), so
# the prompt goes in llama.cpp's default ubatch as resident's does: equal tokens, K-quant ernie4_5-moe and
# GLM-4.7-Flash included. With less (test below) the prompt is split and the run says so.
CASES = [pytest.param(p, t, id=f"{p}-{t}") for p, t in CASES]


@pytest.mark.parametrize("preset,qtype", CASES)
def test_streaming_modes_equal_resident_or_refuse(compat_file, preset, qtype):
    cells = check_file(compat_file(preset, qtype))
    ref = cells["resident"]
    assert ref.status == "reference" and ref.tokens, f"resident did not run: {ref.short()}"
    for mode in MODES:
        c = cells[mode]
        assert c.status in ("equal", "refused"), f"{mode}: {c.short()}"
        if c.status == "refused":
            assert c.detail and "\n" not in c.detail and "Traceback" not in c.detail, f"{mode}: {c.detail!r}"
        else:
            assert c.prompt_ubatch is None, f"{mode}: the prompt was split ({c.prompt_ubatch}-token ubatches)"
            if mode != "auto":
                assert c.ran == mode, f"{mode} ran as {c.ran}"
    auto = cells["auto"]
    if any(cells[m].status == "equal" for m in MODES[:2]):
        assert auto.status == "equal", f"auto failed where another mode runs: {auto.short()}"


def test_a_cache_smaller_than_a_layer_splits_the_prompt_and_says_so(compat_file):
    """Below one layer's experts the prompt cannot go in one ubatch (a ubatch's union of experts must be resident
    at once): the run still streams, in ubatches of slots / n_used tokens, and says so in one warning line and in
    --json, because llama.cpp's matmuls group a ubatch's rows per expert (the last bits of a K-quant ernie file's
    logits change with the ubatch, resident too)."""
    path = compat_file("ernie-4.5-21b-a3b", "Q4_K_M")
    whole = streaming_budget(path)
    cache = _plan(path, str(whole))["expert_cache"]
    small = whole - 4 * (cache["expert_bytes"] + 3 * 4096)   # about 4 slots of the 8 a layer has
    assert _plan(path, str(small))["expert_cache"]["prompt_ubatch"] < 512
    r = _cli("run", str(path), "--mode", "expert-stream", "--raw", "--temp", "0", "-n", "4", "-p", "Once upon a time",
             "--json", "--ctx", "512", "--threads", "1", "--no-warm-start", "--ram-budget", str(small), timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["mode"] == "expert-stream" and 1 <= out["prompt_ubatch"] < 512
    assert out["prompt_ubatch"] == out["cache_slots"] // out["experts_used"] and out["cache_slots"] < out["n_expert"]
    warn = [ln for ln in r.stderr.splitlines() if "prompts go in ubatches of" in ln]
    assert len(warn) == 1 and f"ubatches of {out['prompt_ubatch']} tokens" in warn[0], r.stderr[-800:]

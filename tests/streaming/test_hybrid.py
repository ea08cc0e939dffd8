"""Dense FFN layers beside MoE layers (llama4 interleaves them; DeepSeek, Kimi and GLM lead with some): when the
plan streams both, one model streams its experts through the expert cache and its dense FFN through a slot pool
(HybridStreamer), bit-identical to the default resident load. Files: llama.cpp's own llama-quantize, Q4_K_M."""
from __future__ import annotations

import numpy as np
import pytest

import hypura_llama as h
from hypura_engine import LoadOptions, Runner
from hypura_engine.planning import plan_for
from hypura_placement import PlanError
from hypura_streaming import HybridStreamer, StreamSpec
from hypura_synthetic import write_synthetic
from hypura_synthetic.compat import make_file
from hypura_synthetic.realfiles import quantize
from helpers import greedy_with_logits

PROMPT = "Once upon a time there was a streamed model"


@pytest.fixture(scope="module")
def llama4(tmp_path_factory, llama_bin):
    """llama4-maverick, tiny: layers 0 and 2 dense FFN, 1 and 3 MoE (8 experts, 1 used)."""
    return make_file(tmp_path_factory.mktemp("hybrid"), "llama4-maverick", "Q4_K_M")


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory, llama_bin):
    """deepseek-v3, tiny, two leading dense layers (each larger than the two experts a token uses, so a budget
    between streams them through the pool and keeps expert cache beside)."""
    folder = tmp_path_factory.mktemp("hybrid-ds")
    f16 = write_synthetic(folder / "ds-F16.gguf", "deepseek-v3", qtype="F16", layers=4, scale=16, experts=16,
                          experts_used=2, dense_lead=2, align=256, vocab=512)
    return quantize(f16, folder / "ds-Q4_K_M.gguf", "Q4_K_M")


def _reference(path, ubatch=512, n=6):
    with h.LlamaModel.load(str(path)) as m:
        return greedy_with_logits(m, n=n, ubatch=ubatch, prompt=PROMPT)


def test_experts_and_dense_layers_stream_in_one_model(llama4):
    st = HybridStreamer(StreamSpec.experts(llama4, [1, 3], 8), StreamSpec.dense(llama4, [0, 2], n_slots=1))
    model = st.load_model()
    try:
        assert st.max_ubatch == 512            # the cache holds a whole layer: the prompt in one ubatch
        toks, logits = greedy_with_logits(model, st.eval_filter, n=6, prompt=PROMPT)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    ref_toks, ref_logits = _reference(llama4)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    dense = stats["dense"]
    assert dense["streamed_layers"] == 2 and dense["fills"] >= 2 * 7 - 1   # one slot, 2 layers, 7 passes
    assert stats["streamed_layers"] == 4 and stats["experts_loaded"] > 0
    assert stats["bytes_from_disk"] > dense["bytes_from_disk"] > 0


def test_the_plan_streams_dense_layers_beside_experts_when_the_budget_needs_it(deepseek):
    """A budget below one where the dense layers fit: the planner streams a dense layer through the pool and
    keeps expert cache beside it; the engine runs that plan as planned (not everything resident)."""
    full, _ = plan_for(deepseek, LoadOptions(mode="auto", ctx=512, ram_budget=1 << 40))
    assert full.mode == "full-resident"
    budget = None
    for b in range(int(full.used("ram")) - (256 << 10), int(full.used("ram")) - (8 << 20), -(32 << 10)):
        try:
            plan, _ = plan_for(deepseek, LoadOptions(mode="auto", ctx=512, ram_budget=b))
        except PlanError:   # too small for any placement
            continue
        dense_nvme = [r["layer"] for r in plan.layers if r["ffn_kind"] == "dense_ffn" and r["ffn"] == "nvme"]
        if plan.mode == "expert-streaming" and dense_nvme:
            budget = b
            break
    assert budget is not None, "no budget streams a dense layer beside the experts"
    runner = Runner(deepseek, LoadOptions(mode="auto", ctx=512, ram_budget=budget))
    try:
        assert isinstance(runner.streamer, HybridStreamer)
        ubatch = runner.ctx.params.n_ubatch
        toks, logits = greedy_with_logits(runner.model, runner.streamer.eval_filter, n=6, ubatch=ubatch,
                                          prompt=PROMPT)
        stats = runner.stats()
    finally:
        runner.close()
    assert stats["dense"]["streamed_layers"] == len(dense_nvme)
    ref_toks, ref_logits = _reference(deepseek, ubatch=ubatch)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)

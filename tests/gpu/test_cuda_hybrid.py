"""On a CUDA GPU: a model with dense FFN layers beside MoE layers (llama4 interleaves them) streams both kinds
into VRAM at once (HybridStreamer: experts through the VRAM expert cache, dense FFN through VRAM slots) with the
greedy tokens of the fully resident GPU run. File: llama.cpp's own llama-quantize, Q4_K_M."""
from __future__ import annotations

import pytest

import hypura_llama as h
from hypura_streaming import HybridStreamer, StreamSpec
from hypura_synthetic.compat import make_file
from helpers import greedy_with_logits

pytestmark = pytest.mark.gpu


def test_experts_and_dense_layers_stream_into_vram_together(tmp_path, llama_bin):
    devs = h.gpu_devices()
    if not devs:
        pytest.fail("no GPU device in this build (gpu tests run on a CUDA build)")
    path = make_file(tmp_path, "llama4-maverick", "Q4_K_M")      # layers 0, 2 dense; 1, 3 MoE (8 experts)
    st = HybridStreamer(StreamSpec.experts(path, [1, 3], 8), StreamSpec.dense(path, [0, 2], n_slots=1),
                        device=devs[0])
    model = st.load_model()
    try:
        toks, _ = greedy_with_logits(model, st.eval_filter, n=8, n_ctx=256)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    with h.LlamaModel.load(str(path)) as m:
        ref, _ = greedy_with_logits(m, n=8, n_ctx=256)
    assert toks == ref
    assert stats["device"] != "CPU" and stats["dense"]["streamed_ops_on_gpu"]
    assert stats["dense"]["fills"] >= 2 and stats["experts_loaded"] > 0

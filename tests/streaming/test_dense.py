"""Dense-FFN streaming: bit-identical to the resident run, and the negative controls fail."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import hypura_llama as h
from hypura_streaming import DenseStreamer, DirectReader, OwnedLoad, StreamError, StreamSpec
from helpers import greedy_with_logits

PROMPT = "Why is the sky blue? Explain the physics of light scattering in detail."
N = 16


def _greedy(model, filt=None, n=N, n_batch=512):
    """Greedy tokens and every step's logits; the prompt is decoded as one batch."""
    return greedy_with_logits(model, filt, n=n, ubatch=n_batch, n_ctx=256, prompt=PROMPT)


@pytest.fixture(scope="module")
def resident(default_model):
    """The same model fully resident, through the same owned loader (no weight repacking)."""
    reader = DirectReader(default_model)
    load = OwnedLoad(default_model, reader, lambda name: False)
    model = load.load(h.ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False))
    load.close()
    reader.close()
    yield _greedy(model)
    model.close()


def test_owned_load_equals_llama_cpp_file_load(default_model, resident):
    with h.LlamaModel.load(default_model, h.ModelParams(use_extra_bufts=False)) as model:
        toks, logits = _greedy(model)
    assert toks == resident[0]
    assert np.array_equal(logits, resident[1])


@pytest.mark.parametrize("layers,slots", [(range(9, 18), 2), (range(0, 18), 3), (range(0, 18, 2), 1),
                                          (range(1, 18, 3), 4)])
def test_streaming_is_bit_identical(default_model, resident, layers, slots):
    st = DenseStreamer(StreamSpec.dense(default_model, layers, slots))
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
        stats = st.stats()
        smallest = min(lay.size for lay in st.layouts)
    finally:
        model.close()
        st.close()
    assert toks == resident[0]
    assert np.array_equal(logits, resident[1])
    passes = N + 1
    assert stats["passes"] == passes
    k = len(layers)
    sharing = k - sum(1 for s in range(slots) if len(range(s, k, slots)) == 1)  # slots held by one layer stay loaded
    assert stats["fills"] >= (passes - 1) * sharing  # every layer that shares a slot is re-read every pass
    assert stats["bytes_from_disk"] >= stats["fills"] * smallest  # bytes are counted, not assumed
    assert stats["direct_io"] is True


def test_batched_prompt_in_several_ubatches(default_model, resident):
    st = DenseStreamer(StreamSpec.dense(default_model, range(0, 18), 2))
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter, n_batch=4)  # the prompt spans several graphs
    finally:
        model.close()
        st.close()
    ref_model_toks = resident[0]
    assert toks == ref_model_toks


def test_a_prompt_of_over_32_tokens_in_one_batch(default_model):
    """Prefill as one ubatch of ~90 tokens (the batch size from which llama.cpp's scheduler offloads host
    weights' ops to a GPU): streamed equals resident, bit for bit."""
    prompt = " ".join([PROMPT] * 5)

    reader = DirectReader(default_model)
    load = OwnedLoad(default_model, reader, lambda name: False)   # resident, through the same loader
    model = load.load(h.ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False))
    load.close()
    reader.close()
    try:
        ref_toks, ref_logits = greedy_with_logits(model, None, n=8, ubatch=512, n_ctx=256, prompt=prompt)
    finally:
        model.close()
    st = DenseStreamer(StreamSpec.dense(default_model, range(0, 18), 2))
    model = st.load_model()
    try:
        n_prompt = len(model.tokenize(prompt))
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8, ubatch=512, n_ctx=256, prompt=prompt)
    finally:
        model.close()
        st.close()
    assert n_prompt >= 32
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)


def test_negative_control_filling_too_late_changes_the_output(default_model, resident):
    """Fill at the down matmul (`ffn_out-N`) instead of `ffn_norm-N`: the gate/up matmuls of each
    layer then run on the previous occupant's weights, and the comparison must notice."""
    st = DenseStreamer(StreamSpec.dense(default_model, range(9, 18), 2), trigger="ffn_out-")
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
    finally:
        model.close()
        st.close()
    assert not np.array_equal(logits, resident[1])


def test_model_file_vanishing_mid_run_is_a_clear_error(tmp_path, default_model):
    path = tmp_path / "m.gguf"
    shutil.copyfile(default_model, path)
    st = DenseStreamer(StreamSpec.dense(path, range(9, 18), 2))
    model = st.load_model()
    try:
        with h.LlamaContext(model, h.ContextParams(n_ctx=64), st.eval_filter) as ctx:
            ctx.decode(model.tokenize("Hello"), 0)
            os.unlink(path)
            with pytest.raises(StreamError, match="vanished"):
                ctx.decode([1234], 2)
    finally:
        model.close()
        st.close()


def test_model_file_changing_mid_run_is_a_clear_error(tmp_path, default_model):
    path = tmp_path / "m.gguf"
    shutil.copyfile(default_model, path)
    st = DenseStreamer(StreamSpec.dense(path, range(9, 18), 2))
    model = st.load_model()
    try:
        with h.LlamaContext(model, h.ContextParams(n_ctx=64), st.eval_filter) as ctx:
            ctx.decode(model.tokenize("Hello"), 0)
            with open(path, "r+b") as f:  # a copy in tmp_path, never the user's model
                f.truncate(path.stat().st_size // 2)
            with pytest.raises(StreamError, match="changed"):
                ctx.decode([1234], 2)
    finally:
        model.close()
        st.close()


def test_ram_tier_layers_are_read_once(default_model, resident):
    st = DenseStreamer(StreamSpec.dense(default_model, range(6, 18), 2, ram_layers=range(6, 12)))
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
        stats = st.stats()
        nvme_bytes = sum(lay.size for lay in st.layouts if lay.key >= 12)
    finally:
        model.close()
        st.close()
    assert toks == resident[0] and np.array_equal(logits, resident[1])
    assert stats["disk_bytes_per_pass"] == nvme_bytes
    # RAM-tier layers come from their copy: disk reads are the NVMe layers' only (+ one pass of prefetch)
    assert stats["bytes_from_disk"] <= (stats["passes"] + 1) * nvme_bytes

"""Dense-FFN streaming: bit-identical to THE reference (`--mode resident`, default settings: on the CPU
llama.cpp repacks Q4_0/Q4_K/… weights), and the negative controls fail."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import hypura_llama as h
from hypura_streaming import DenseStreamer, DirectReader, OwnedLoad, StreamError, StreamSpec
from hypura_streaming.repack import cpu_computes
from helpers import greedy_with_logits, reference_greedy

PROMPT = "Why is the sky blue? Explain the physics of light scattering in detail."
N = 16


def _greedy(model, filt=None, n=N, n_batch=512):
    """Greedy tokens and every step's logits; the prompt is decoded as one batch."""
    return greedy_with_logits(model, filt, n=n, ubatch=n_batch, n_ctx=256, prompt=PROMPT)


@pytest.fixture(scope="module")
def resident(default_model):
    """The reference: `--mode resident` with default settings."""
    return reference_greedy(default_model, n=N, ubatch=512, n_ctx=256, prompt=PROMPT)


def _streamed(st):
    """Load `st`'s model, greedy-decode through its filter; (tokens, logits, stats), everything closed."""
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
        return toks, logits, st.stats()
    finally:
        model.close()
        st.close()


def _owned(path, repack=None):
    reader = DirectReader(path)
    load = OwnedLoad(path, reader, lambda name: False, repack=repack)
    try:
        return load.load(h.ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False)), load
    finally:
        load.close()
        reader.close()


def test_owned_load_equals_the_reference(default_model, resident):
    """Every weight through Hypura's loader, repacked where llama.cpp's default load repacks: the same."""
    model, load = _owned(default_model)
    try:
        toks, logits = _greedy(model)
    finally:
        model.close()
    assert toks == resident[0]
    assert np.array_equal(logits, resident[1])
    if cpu_computes():
        assert len(load.repack_bufts) > 0 and "token_embd.weight" not in load.repack_bufts


@pytest.mark.skipif(not cpu_computes(), reason="repacking is what the CPU does")
def test_negative_control_owned_load_without_repacking_differs(default_model, resident):
    model, _ = _owned(default_model, repack=False)
    try:
        _, logits = _greedy(model)
    finally:
        model.close()
    assert not np.array_equal(logits, resident[1])


@pytest.mark.parametrize("layers,slots", [(range(9, 18), 2), (range(0, 18), 3), (range(0, 18, 2), 1),
                                          (range(1, 18, 3), 4)])
def test_streaming_is_bit_identical(default_model, resident, layers, slots):
    st = DenseStreamer(StreamSpec.dense(default_model, layers, slots))
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
        stats = st.stats()
        smallest = min(lay.size for lay in st.layouts)
        slot_size = st.pool.slot_size
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
    if cpu_computes() and len(layers) == 18:  # some streamed tensors repack: converted in the slots, no more memory
        assert stats["bytes_repacked"] > 0 and stats["repack_bytes"] == 0
        assert stats["pool_bytes"] == slots * slot_size


@pytest.mark.parametrize("layers,slots", [(range(5, 18), 2), (range(1, 18, 3), 2)])
def test_a_slot_takes_the_next_read_as_soon_as_its_layer_has_computed(default_model, resident, layers, slots):
    """13 streamed layers through 2 slots: the last layer and the next pass's first share slot 0. Its slot is
    released when the last layer has computed (its `l_out` node), so the next pass's first layers are read while
    the output head computes; before, the first layer of every pass was read with nothing to overlap. With
    resident layers between streamed ones, each streamed layer's slot is refilled during them. Every use of a
    layer but the very first is then a prefetch hit, and the output is still the reference's."""
    toks, logits, stats = _streamed(DenseStreamer(StreamSpec.dense(default_model, layers, slots)))
    assert toks == resident[0] and np.array_equal(logits, resident[1])
    assert stats["prefetch_hits"] == stats["passes"] * len(layers) - 1


@pytest.mark.skipif(not cpu_computes(), reason="repacking is what the CPU does")
def test_negative_control_streaming_without_repacking_differs(default_model, resident):
    """With the repack overrides disabled (the loader of before), the comparison must notice."""
    _, logits, stats = _streamed(DenseStreamer(StreamSpec.dense(default_model, range(0, 18), 2), repack=False))
    assert stats["bytes_repacked"] == 0
    assert not np.array_equal(logits, resident[1])


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
    ref_toks, ref_logits = reference_greedy(default_model, n=8, ubatch=512, n_ctx=256, prompt=prompt)
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


def test_per_layer_types_slots_hold_the_largest_layer(default_model):
    """Q4_K_M gives some layers' ffn_down another type (bigger): the slots and the planner's slot are sized
    for the largest streamed layer, and on the CPU only the layers whose tensors repack convert."""
    from hypura_engine import LoadOptions
    from hypura_engine.planning import plan_for

    st = DenseStreamer(StreamSpec.dense(default_model, range(0, 18), 2))
    model = st.load_model()
    try:
        sizes = [lay.size for lay in st.layouts]
        assert len(set(sizes)) > 1 and st.pool.slot_size >= max(sizes)
        if cpu_computes():
            converting = [bool(c) for c in st._convert]
            assert any(converting) and not all(converting)
            for r in st.repack_slots:
                assert r.slot_size >= max(sum(h.lib.ggml_nbytes(t) for s, t, _ in c if s is r) for c in st._convert)
    finally:
        model.close()
        st.close()
    plan, info = plan_for(default_model, LoadOptions(mode="dense-stream", ram_budget=810 << 20))
    ffn = {t.layer: 0 for t in info.tensors if t.layer is not None}
    for t in info.tensors:
        if t.layer is not None and t.role == "dense_ffn":
            ffn[t.layer] += t.nbytes
    assert len(set(ffn.values())) > 1 and plan.slot_bytes == max(ffn.values())
    assert {r["layer"]: r["ffn_bytes"] for r in plan.layers} == ffn

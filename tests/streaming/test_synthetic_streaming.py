"""Synthetic models of real architectures: they load and generate in llama.cpp, and both
streaming modes are bit-identical to THE reference: the same model loaded as `--mode resident` loads it
(llama.cpp's default parameters, so on the CPU Q4_0/Q4_K/IQ4_NL/... weights are repacked into
CPU_REPACK)."""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pytest

import hypura_llama as h
from hypura_synthetic import TINY, write_synthetic
from hypura_streaming import DenseStreamer, ExpertStreamer, StreamSpec
from helpers import greedy_with_logits

MOE = ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "kimi-k2"]
DENSE = ["llama3-70b", "qwen2.5-14b"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    out = {}
    for name in MOE + DENSE:
        for qtype in ("F16", "Q4_0", "Q8_0"):
            out[name, qtype] = write_synthetic(d / f"{name}-{qtype}.gguf", name, qtype=qtype, skew=0.0, **TINY[name])
    return out


def _greedy(model, filt=None, n=8, ubatch=512):
    return greedy_with_logits(model, filt, n=n, ubatch=ubatch)


def _moe_shape(path) -> tuple[int, int, int]:
    """(experts per layer, experts used per token, leading dense layers) from the file's metadata."""
    with h.LlamaModel.load(path, h.ModelParams(vocab_only=True)) as m:
        meta = m.metadata()
    arch = meta["general.architecture"]
    return (int(meta[f"{arch}.expert_count"]), int(meta[f"{arch}.expert_used_count"]),
            int(meta.get(f"{arch}.leading_dense_block_count", 0)))


def _streamed(st, n=8, ubatch=None):
    """Greedy tokens, logits and stats of a run through `st` (closed afterwards); ubatch: the streamer's
    largest by default. The stats carry the run's wall time as `wall_s`."""
    model = st.load_model()
    try:
        t0 = time.perf_counter()
        toks, logits = _greedy(model, st.eval_filter, n=n, ubatch=ubatch or st.max_ubatch)
        return toks, logits, {**st.stats(), "wall_s": time.perf_counter() - t0}
    finally:
        model.close()
        st.close()


@lru_cache(maxsize=None)
def _resident(path, ubatch=512, n=8):
    """The reference: the model fully resident as `hypura run --mode resident` loads it (llama.cpp's
    default model parameters: repacked CPU weights), computed once per (file, ubatch, tokens)."""
    with h.LlamaModel.load(path) as m:
        return _greedy(m, n=n, ubatch=ubatch)


@pytest.mark.parametrize("name", MOE + DENSE)
@pytest.mark.parametrize("qtype", ["F16", "Q4_0", "Q8_0"])
def test_preset_loads_and_generates_in_llama_cpp(models, name, qtype):
    with h.LlamaModel.load(models[name, qtype]) as m:
        toks, logits = _greedy(m, n=4)
        assert m.n_layer == TINY[name]["layers"]
    assert np.isfinite(logits).all() and len(set(toks)) >= 1


@pytest.mark.parametrize("name", MOE)
@pytest.mark.parametrize("qtype", ["F16", "Q4_0"])
def test_expert_streaming_is_bit_identical(models, name, qtype):
    path = models[name, qtype]
    n_exp, n_used, lead = _moe_shape(path)
    slots = max(n_used, n_exp // 2)  # a cache smaller than one layer's experts, shared by every layer
    assert slots < n_exp
    st = ExpertStreamer(StreamSpec.experts(path, range(lead, TINY[name]["layers"]), slots))
    toks, logits, stats = _streamed(st)
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    assert stats["experts_loaded"] > 0 and 0 <= stats["expert_cache_hit_rate"] < 1
    assert stats["io_saved_fraction"] > 0  # only the chosen experts were read
    assert stats["decode_passes"] >= 8     # single-token passes (a 1-token last prompt chunk is one too)
    assert stats["disk_bytes_per_token"] <= stats["bytes_from_disk"] / 8
    # the decode thread's own time at the splits is measured apart from its waits for reads, and both fit the run
    assert 0 < stats["decode_callback_s"] and stats["decode_callback_s"] + stats["decode_stall_s"] < stats["wall_s"]
    # F16 experts here are whole pages: read straight into the host slots; Q4_0 ones are not: staged, copied
    assert stats["in_place_fraction"] == (1.0 if qtype == "F16" else 0.0)
    # staging for reads in place is a page before and after; staged reads need a whole expert's pages
    per_thread = stats["staging_bytes"] // st.reader.threads
    assert per_thread == 8192 if qtype == "F16" else per_thread > max(k.stride for k in st.layout.kinds.values())
    # after the first pass showed the order of the expert matmuls, the later kinds were read during the earlier
    # (llama.cpp's graph computes gate before up, the activation's first source; a fused gate_up is one matmul,
    # its gate/up views are not)
    order = ("gate_up", "down") if "gate_up" in st.layout.kinds else ("gate", "up", "down")
    assert set(st.matmul_order.values()) == {order} and set(st.matmul_order) == set(st.layers)
    assert 0 < stats["reads_overlapped"] <= stats["experts_loaded"] * (len(order) - 1)


# >= 2 streamed MoE layers; F16: guesses read in place (mixtral's F16 guesses are all cached: no reads), Q4_0: staged
@pytest.mark.parametrize("name,qtype", [("mixtral-8x7b", "Q4_0"), ("qwen3-30b-a3b", "Q4_0"), ("deepseek-v3", "Q4_0"),
                                        ("qwen3-30b-a3b", "F16"), ("deepseek-v3", "F16")])
def test_prefetch_reads_guesses_early_and_changes_nothing(models, name, qtype):
    """Guessing the next layer's experts (its router on this layer's FFN input) and reading them while a
    layer computes: the same tokens and logits as resident and as no prefetch; the same selections; a
    selection served by a guess counts as read, not as a hit; wrong guesses are stopped or kept whole."""
    path = models[name, qtype]
    n_exp, n_used, lead = _moe_shape(path)
    layers = range(lead, TINY[name]["layers"])
    runs = {}
    slots = max(n_used, n_exp // 2) * 2
    ubatch = slots // n_used    # prompt chunks that fill the cache as a long prompt would (mixtral: 8 = n_exp slots)
    for prefetch in (True, False):
        st = ExpertStreamer(StreamSpec.experts(path, layers, slots), prefetch=prefetch, prompt_guesses=prefetch)
        runs[prefetch] = (*_streamed(st, n=16, ubatch=ubatch), st.cache.stats)
    ref_toks, ref_logits = _resident(path, ubatch=ubatch, n=16)
    (on_t, on_l, on, on_c), (off_t, off_l, off, off_c) = runs[True], runs[False]
    assert on_t == off_t == ref_toks
    assert np.array_equal(on_l, ref_logits) and np.array_equal(off_l, ref_logits)
    pf = on["prefetch"]
    print(name, pf, "hit rate", on["expert_cache_hit_rate"], "vs", off["expert_cache_hit_rate"])
    assert pf["enabled"] and pf["guesses"] > 0 and pf["reads"] > 0 and pf["used"] > 0
    assert pf["accuracy"] > n_used / n_exp           # better than a random guess
    assert pf["used"] + pf["abandoned"] <= pf["reads"]
    assert on_c.hits + on_c.misses + on_c.prefetched == off_c.hits + off_c.misses   # the same selections
    assert on["experts_prefetched"] == pf["used"] == on_c.prefetched
    assert on["needed_bytes_per_token"] <= on["disk_bytes_per_token"]
    assert not off["prefetch"]["enabled"] and off["prefetch"]["reads"] == 0 and off_c.prefetched == 0


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "deepseek-v3"])
def test_prompt_ubatch_reads_the_next_layers_guessed_union_early(models, name):
    """A long prompt in one ubatch (the cache holds a layer's experts): at each layer the union of every token's
    guess for the next layer is read while this layer computes (evicting the policy's victims). The same tokens
    and logits as resident; the same selections as without guesses; guesses served reads."""
    from hypura_streaming.experts.streamer import PROMPT_GUESSES_FROM

    path = models[name, "Q4_0"]
    n_exp, n_used, lead = _moe_shape(path)
    layers = range(lead, TINY[name]["layers"])
    prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    runs = {}
    for guesses in (True, False):
        st = ExpertStreamer(StreamSpec.experts(path, layers, n_exp + n_exp // 2), prompt_guesses=guesses)
        model = st.load_model()
        try:
            assert len(model.tokenize(prompt)) >= PROMPT_GUESSES_FROM and st.max_ubatch == 512
            toks, logits = greedy_with_logits(model, st.eval_filter, n=4, ubatch=512, n_ctx=256, prompt=prompt)
            runs[guesses] = (toks, logits, st.stats(), st.cache.stats)
        finally:
            model.close()
            st.close()
    with h.LlamaModel.load(path) as m:
        ref_toks, ref_logits = greedy_with_logits(m, n=4, ubatch=512, n_ctx=256, prompt=prompt)
    (on_t, on_l, on, on_c), (off_t, off_l, off, off_c) = runs[True], runs[False]
    assert on_t == off_t == ref_toks
    assert np.array_equal(on_l, ref_logits) and np.array_equal(off_l, ref_logits)
    pf = on["prefetch"]
    assert pf["enabled"] and pf["reads"] > 0 and on_c.prefetched > 0 and pf["guesses"] == 0   # (decode guesses: off)
    assert on_c.hits + on_c.misses + on_c.prefetched == off_c.hits + off_c.misses              # the same selections
    assert not off["prefetch"]["enabled"] and off_c.prefetched == 0


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3"])   # top-2 of 8; top-8 of 16
def test_a_prompt_ubatch_guesses_wider_than_a_token(models, name):
    """One token's guess is its router's n_used likeliest experts for the next layer; a prompt ubatch's is the union
    of each token's PROMPT_WIDTH x n_used likeliest (a prefill's spare disk time buys more of its misses early)."""
    from hypura_streaming.experts.prefetch import PROMPT_WIDTH

    path = models[name, "Q4_0"]
    n_exp, n_used, lead = _moe_shape(path)
    width = min(n_exp, PROMPT_WIDTH * n_used)   # (tiny qwen3 and deepseek: every expert)
    st = ExpertStreamer(StreamSpec.experts(path, range(lead, TINY[name]["layers"]), n_exp))
    model = st.load_model()
    try:
        g, layer = st.guesses, st.layers[0]
        x = np.random.default_rng(0).standard_normal((3, model.n_embd)).astype(np.float32)
        nxt, one = g.guess(layer, x[0])
        assert nxt == st.layers[1] and len(one) == n_used
        _, twice = g.guess(layer, np.stack([x[0], x[0]]))       # the same token twice: its wider guess alone
        assert set(one) < set(twice) and len(twice) == width
        _, batch = g.guess(layer, x)
        singles = [set(g.guess(layer, np.stack([row, row]))[1]) for row in x]
        assert set(batch) == set().union(*singles)
    finally:
        model.close()
        st.close()


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3"])   # separate gate/up; fused gate_up
def test_experts_read_late_are_waited_for_or_the_pass_fails(models, name):
    """Negative control for reading later kinds while the earlier expert matmuls compute: once a layer has shown
    the order of its expert matmuls, each later kind is waited for at the split before its matmul. If those splits
    then do not
    happen (the streamer no longer switches it on), the check after the down matmul fails the pass with a
    StreamError — never a token computed from half-read experts."""
    from hypura_llama import ContextParams, LlamaContext
    from hypura_streaming import StreamError

    path = models[name, "F16"]
    n_exp, n_used, lead = _moe_shape(path)
    layers = list(range(lead, TINY[name]["layers"]))
    st = ExpertStreamer(StreamSpec.experts(path, layers, n_used))   # one token's experts: nearly all selections miss
    model = st.load_model()
    try:
        with LlamaContext(model, ContextParams(n_ctx=64, n_batch=st.max_ubatch, n_ubatch=st.max_ubatch),
                          st.eval_filter) as ctx:
            toks = model.tokenize("The quick brown fox")
            ctx.decode(toks, 0)
            ctx.decode([1], len(toks))
            before = st.stats()["reads_overlapped"]
            assert before > 0
            st.stop_switching_on_matmul_splits()   # they stay off (the first pass switched them off)
            with pytest.raises(StreamError, match="its experts were not all waited for before its down matmul"):
                for i in range(4):   # the first pass with a miss fails
                    ctx.decode([2 + i], len(toks) + 1 + i)
    finally:
        model.close()
        st.close()


def test_a_pass_aborted_while_down_experts_are_read_leaves_nothing_wrong(models):
    """A decode aborted (llama.cpp's abort callback) right after a layer staged its later reads: the next
    pass finishes those reads before using the cache, and a fresh context over the same streamer gives
    the resident run's tokens and logits."""
    from hypura_llama import ContextParams, DecodeError, LlamaContext

    path = models["mixtral-8x7b", "F16"]
    n_exp, n_used, _ = _moe_shape(path)
    layers = list(range(TINY["mixtral-8x7b"]["layers"]))
    st = ExpertStreamer(StreamSpec.experts(path, layers, n_used))
    model = st.load_model()
    try:
        with LlamaContext(model, ContextParams(n_ctx=64, n_batch=st.max_ubatch, n_ubatch=st.max_ubatch),
                          st.eval_filter) as ctx:
            inner, aborted = st.eval_filter.handler, []

            def handler(tensor, ask, rule, layer):
                inner(tensor, ask, rule, layer)
                if st.late_reads_pending and not aborted:
                    aborted.append(layer)
                    ctx.abort()

            st.eval_filter.handler = handler
            toks = model.tokenize("The quick brown fox")
            with pytest.raises(DecodeError):
                ctx.decode(toks, 0)    # the first pass learns the splits: nothing is staged in it
                for i in range(8):
                    ctx.decode([toks[0]], len(toks) + i)
            assert aborted and st.late_reads_pending   # stopped with later reads in flight
            st.eval_filter.handler = inner
        got_toks, got_logits = _greedy(model, st.eval_filter, n=8, ubatch=st.max_ubatch)
    finally:
        model.close()
        st.close()
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch, n=8)
    assert got_toks == ref_toks
    assert np.array_equal(got_logits, ref_logits)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3"])
def test_a_long_prompt_in_one_ubatch_when_a_layers_experts_fit(models, name):
    """A prompt of well over 32 tokens in one ubatch through a cache that holds a whole layer's experts:
    each layer reads the union of its tokens' experts once; bit-identical to resident at the same ubatch."""
    path = models[name, "F16"]
    n_exp, _, lead = _moe_shape(path)
    prompt = "The quick brown fox jumps over the lazy dog. " * 8
    st = ExpertStreamer(StreamSpec.experts(path, range(lead, TINY[name]["layers"]), n_exp))
    model = st.load_model()
    try:
        assert st.max_ubatch == 512
        toks, logits = greedy_with_logits(model, st.eval_filter, n=6, ubatch=512, n_ctx=512, prompt=prompt)
        stats = st.stats()
        n_prompt = len(model.tokenize(prompt))
    finally:
        model.close()
        st.close()
    with h.LlamaModel.load(path) as m:
        ref_toks, ref_logits = greedy_with_logits(m, n=6, ubatch=512, n_ctx=512, prompt=prompt)
    assert n_prompt >= 32 and stats["passes"] == 1 + 6
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3"])
def test_cache_larger_than_one_layers_experts(models, name):
    """Slots > n_expert: remapped ids exceed n_expert, so every tensor those ids index (the matmuls and
    llama.cpp's optional per-expert scales the loader fills neutrally) must span the slots. A layer's
    experts all fit, so any batch's union does: the prompt goes in one ubatch (one pass), not in chunks."""
    path = models[name, "Q4_0"]
    n_exp, n_used, lead = _moe_shape(path)
    layers = range(lead, TINY[name]["layers"])
    st = ExpertStreamer(StreamSpec.experts(path, layers, n_exp + n_exp // 2))
    toks, logits, stats = _streamed(st, n=12)
    assert st.n_slots == n_exp + n_exp // 2
    assert st.max_ubatch == 512 > st.n_slots // n_used
    assert stats["passes"] == 1 + 12      # the prompt's pass, then one per decoded token
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch, n=12)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)


@pytest.mark.parametrize("policy", ["lfu", "lru"])
@pytest.mark.parametrize("qtype", ["F16", "Q4_0"])
def test_ram_cache_tier_behind_the_expert_cache(models, policy, qtype):
    """A device-sized cache of n_used slots backed by a RAM cache of half the experts (here both in host
    memory): misses of the first tier that hit the second are copied, not read; output bit-identical."""
    path = models["qwen3-30b-a3b", qtype]
    layers = range(TINY["qwen3-30b-a3b"]["layers"])
    n_exp, n_used, _ = _moe_shape(path)
    st = ExpertStreamer(StreamSpec.experts(path, layers, n_used, ram_slots=n_exp * len(layers) // 2), policy=policy,
                        prefetch=False)
    toks, logits, stats = _streamed(st, n=16)
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch, n=16)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    assert stats["cache_policy"] == policy and stats["ram_cache_slots"] == n_exp * len(layers) // 2
    assert stats["ram_cache_hits"] > 0 and stats["bytes_from_ram"] > 0
    # every first-tier miss came from RAM or disk, never both
    per_expert = stats["bytes_from_ram"] // stats["ram_cache_hits"]
    assert stats["experts_loaded"] * per_expert == stats["bytes_from_ram"] + st.expert_bytes_read


@pytest.mark.parametrize("name", DENSE)
def test_dense_streaming_is_bit_identical(models, name):
    path = models[name, "Q4_0"]
    st = DenseStreamer(StreamSpec.dense(path, range(TINY[name]["layers"]), 1))
    model = st.load_model()
    try:
        toks, logits = _greedy(model, st.eval_filter)
    finally:
        model.close()
        st.close()
    ref_toks, ref_logits = _resident(path)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)


def test_expert_streaming_a_dense_model_is_a_clear_error(models):
    st = ExpertStreamer(StreamSpec.experts(models["llama3-70b", "F16"], [0], 4))
    try:
        with pytest.raises(ValueError, match=r"layer 0 has no routed expert tensors"):
            st.load_model()
    finally:
        st.close()


def test_dense_streaming_a_moe_model_is_a_clear_error(models):
    st = DenseStreamer(StreamSpec.dense(models["mixtral-8x7b", "F16"], [0], 1))
    try:
        with pytest.raises(ValueError, match="no dense FFN tensors in layers"):
            st.load_model()
    finally:
        st.close()


def test_a_failed_expert_read_frees_each_staging_buffer_once(models):
    """Reads of one layer run in parallel; when one fails, the others' pinned/aligned staging buffers go
    back to the pool exactly once (a buffer queued twice would later take two reads at once)."""
    from concurrent.futures import Future

    from hypura_streaming import StreamError

    st = ExpertStreamer(StreamSpec.experts(models["mixtral-8x7b", "Q4_0"], range(TINY["mixtral-8x7b"]["layers"]), 4))
    model = st.load_model()
    try:
        staging = st.memory.staging
        n0 = staging.n_free
        kind = next(iter(st.layout.kinds))
        for order in range(3):
            a, b = staging.take(), staging.take()
            futs = [Future(), Future(), Future()]
            futs[order].set_exception(StreamError("read failed"))
            ok = [f for f in futs if not f.done()]
            ok[0].set_result((kind, a, []))
            ok[1].set_result((kind, b, []))
            with pytest.raises(StreamError):
                st.reads.finish(futs)
            assert staging.n_free == n0 and len({id(x) for x in staging.free_buffers()}) == n0
    finally:
        model.close()
        st.close()


def test_one_layer_in_another_type_streams_bit_identical(tmp_path, monkeypatch):
    """One layer's down experts in another type than the other layers' (as Q4_K_M files do): the cache's down
    slots are sized for the larger expert, each layer's tensor keeps its type; the F16 layers' experts are
    still read in place, the Q8_0 one is staged; tokens and logits equal the resident reference."""
    from gguf import GGMLQuantizationType

    from hypura_synthetic import writer

    odd = "blk.1.ffn_down_exps.weight"
    plain = writer._type_of
    monkeypatch.setattr(writer, "_type_of",
                        lambda s, q: GGMLQuantizationType.Q8_0 if s.name == odd else plain(s, q))
    path = write_synthetic(tmp_path / "mixed.gguf", "mixtral-8x7b", qtype="F16", **TINY["mixtral-8x7b"])
    st = ExpertStreamer(StreamSpec.experts(path, range(TINY["mixtral-8x7b"]["layers"]), 4))
    toks, logits, stats = _streamed(st)
    lay = st.layout
    assert lay.nbytes[(1, "down")] < lay.nbytes[(0, "down")] == lay.kinds["down"].stride
    assert lay.in_place[(0, "down")] == (True,) and lay.in_place[(1, "down")] == (False,)
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)

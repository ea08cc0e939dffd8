"""Warm start of the expert cache from routing statistics of earlier runs: stored in the user cache
directory (never beside the model), read at load, and it changes which reads happen, never the output."""
from __future__ import annotations

import numpy as np
import pytest

import hypura_llama as h

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions
from hypura_engine.routing_stats import load_counts, stats_path
from hypura_synthetic import TINY, write_synthetic
from hypura_streaming import ExpertStreamer, StreamSpec
from helpers import greedy_with_logits


def test_warm_started_cache_reads_less_and_computes_the_same(tmp_path):
    path = write_synthetic(tmp_path / "moe.gguf", "mixtral-8x7b", qtype="Q4_0", skew=0.8, **TINY["mixtral-8x7b"])
    layers = range(TINY["mixtral-8x7b"]["layers"])
    runs = {}
    counts = None
    for phase in ("cold", "warm"):
        st = ExpertStreamer(StreamSpec.experts(path, layers, 8))   # half of the 16 experts of the two layers
        model = st.load_model()
        try:
            if phase == "warm":
                warm = st.warm_start(counts)
                assert warm["warm_start_experts"] == 8 - 2     # all slots but one token's working set
            toks, logits = greedy_with_logits(model, st.eval_filter, n=10, ubatch=st.max_ubatch)
            runs[phase], ubatch = (toks, logits, st.stats()), st.max_ubatch
            counts = st.routing_counts()
        finally:
            model.close()
            st.close()
    (ct, cl, cold), (wt, wl, warm) = runs["cold"], runs["warm"]
    assert wt == ct and np.array_equal(wl, cl)
    with h.LlamaModel.load(path) as m:   # the reference: the default resident load (repacked Q4_0 experts)
        ref_toks, ref_logits = greedy_with_logits(m, n=10, ubatch=ubatch)
    assert ct == ref_toks and np.array_equal(cl, ref_logits)
    assert warm["experts_loaded"] < cold["experts_loaded"], (warm["experts_loaded"], cold["experts_loaded"])
    assert warm["bytes_from_disk"] < cold["bytes_from_disk"]   # warm-start reads count as loading


def test_runner_stores_statistics_in_the_user_cache_and_uses_them(tmp_path):
    path = write_synthetic(tmp_path / "moe.gguf", "mixtral-8x7b", layers=4, scale=8, vocab=512, qtype="Q4_0",
                           skew=0.8)
    from hypura_engine.planning import plan_for

    full, _ = plan_for(path, LoadOptions(mode="auto", ctx=256, ram_budget=64 << 30))
    experts = sum(r["ffn_bytes"] for r in full.layers)
    opts = LoadOptions(mode="expert-stream", ctx=256, ram_budget=full.used("ram") - experts // 2)
    gen = GenerateOptions(num_predict=8, sampling=SamplingOptions(temperature=0))
    target = stats_path(path)
    target.unlink(missing_ok=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        results = []
        for _ in range(2):
            runner = Runner(path, opts)
            try:
                res = list(runner.generate(runner.tokenize("The quick brown fox"), gen))[-1]
                results.append((res.tokens, runner.stats()))
            finally:
                runner.close()
            assert target.is_file() and load_counts(path)
        (t1, s1), (t2, s2) = results
        assert "warm_start_experts" not in s1 and s2["warm_start_experts"] > 0
        assert t2 == t1
        assert sorted(p.name for p in tmp_path.iterdir()) == before   # nothing written beside the model
        assert not target.is_relative_to(tmp_path)
    finally:
        target.unlink(missing_ok=True)


def test_unreadable_statistics_are_ignored(tmp_path):
    path = write_synthetic(tmp_path / "moe.gguf", "mixtral-8x7b", qtype="Q4_0", **TINY["mixtral-8x7b"])
    target = stats_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.write_text("{not json")
        assert load_counts(path) == {}
        target.write_text('{"version": 1, "counts": {"0": {"1": "x"}}}')
        assert load_counts(path) == {}
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("qtype", ["F16", "Q4_K_M"])
def test_host_expert_cache_with_its_page_padding_fits_the_ram_budget(tmp_path, qtype):
    """Host cache slots are a page longer per expert tensor (experts read in place): the plan counts them so,
    and the streamer the engine opens has the plan's slot count — the RAM budget is never exceeded by it. Q4_K_M (llama-quantize): per-layer types, the plan's
    slot is the largest expert of each kind, as the streamer's; repacked experts are staged, never in place."""
    from hypura_engine.planning import open_streamer, plan_for

    path = write_synthetic(tmp_path / "moe.gguf", "mixtral-8x7b", layers=4, scale=8, vocab=512, qtype="F16",
                           **({"align": 256} if qtype != "F16" else {}))
    if qtype != "F16":
        from hypura_synthetic.realfiles import quantize

        path = quantize(path, tmp_path / f"moe-{qtype}.gguf", qtype)
    full, _ = plan_for(path, LoadOptions(mode="auto", ctx=256, ram_budget=64 << 30, warm_start=False))
    experts = sum(r["ffn_bytes"] for r in full.layers)
    for frac in (2, 3, 5):
        plan, info = plan_for(path, LoadOptions(mode="expert-stream", ctx=256, warm_start=False,
                                                ram_budget=full.used("ram") - experts // frac))
        ebytes = plan.expert_cache["expert_bytes"]
        planned = plan.expert_cache["experts"]["ram"] * ebytes + plan.n_slots * plan.slot_bytes
        st = open_streamer(path, plan, info, "expert-stream")
        try:
            st.load_model().close()
            assert st.in_place_fraction == (1.0 if qtype == "F16" else 0.0)
            # the planner's slot is the streamer's host slot: the largest expert of each kind, page-rounded plus a
            # page where read in place (F16); repacked ones are 64-byte aligned, which the plan over-counts
            host_slot = sum(k.slot for k in st.layout.kinds.values())
            assert ebytes == host_slot if qtype == "F16" else ebytes >= host_slot
            assert plan.used("ram") - planned + st.cache_bytes <= plan.ram_budget
            assert st.n_slots == min(planned // ebytes, st.n_expert * len(st.layers))
        finally:
            st.close()


def test_files_with_one_header_and_other_weights_keep_their_own_statistics(tmp_path):
    """Two files of one architecture, tokenizer and size whose router weights differ (skew): one header (the
    first MiB is the same), so the key also hashes weights; a renamed copy still shares its original's key."""
    import shutil

    shape = {**TINY["qwen3-30b-a3b"], "vocab": None}     # Qwen3's own vocabulary: a header of over 1 MiB
    a = write_synthetic(tmp_path / "a.gguf", "qwen3-30b-a3b", qtype="Q4_0", skew=0.0, **shape)
    b = write_synthetic(tmp_path / "b.gguf", "qwen3-30b-a3b", qtype="Q4_0", skew=0.8, **shape)
    assert a.stat().st_size == b.stat().st_size
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read(1 << 20) == fb.read(1 << 20)
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(a, copy)
    assert stats_path(a) != stats_path(b)
    assert stats_path(copy) == stats_path(a)

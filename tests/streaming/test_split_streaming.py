"""Split GGUF sets (written by the vendored `llama-gguf-split`) stream as one model: every read goes to its
shard's file, tokens and logits equal THE reference (`--mode resident`, which llama.cpp loads shard by shard)."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import hypura_llama as h
from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions
from hypura_streaming import DenseStreamer, StreamError, StreamSpec
from hypura_streaming.directio import SHARD_SHIFT
from hypura_synthetic import write_synthetic
from helpers import greedy_with_logits, reference_greedy, run_hypura

LAYERS = 6


@pytest.fixture(scope="module")
def split_set(tmp_path_factory, llama_bin):
    """A tiny dense llama-shaped Q4_0 model in 3 shards; returns (first shard, the unsplit file)."""
    d = tmp_path_factory.mktemp("split")
    src = write_synthetic(d / "dense.gguf", "llama3-70b", layers=LAYERS, scale=16, vocab=512, qtype="Q4_0")
    subprocess.run([str(llama_bin / "llama-gguf-split"), "--split", "--split-max-tensors", "22", str(src),
                    str(d / "tiny")], check=True, capture_output=True)
    shards = sorted(d.glob("tiny-*-of-*.gguf"))
    assert [p.name for p in shards] == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    return shards[0], src


def test_dense_stream_of_a_split_set_equals_the_reference(split_set):
    first, whole = split_set
    ref = reference_greedy(first, n=8)
    assert ref[0] == reference_greedy(whole, n=8)[0]       # the set is the model
    st = DenseStreamer(StreamSpec.dense(first, range(LAYERS), 2))
    model = st.load_model()
    try:
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8)
        stats = st.stats()
        shards = {span.file_offset >> SHARD_SHIFT for lay in st.layouts for span in lay.spans}
    finally:
        model.close()
        st.close()
    assert shards == {0, 1, 2}                              # streamed layers in every shard
    assert len(st.reader.paths) == 3 and stats["direct_io"]
    assert stats["bytes_from_disk"] >= (stats["passes"] - 1) * stats["disk_bytes_per_pass"] // 2
    assert toks == ref[0]
    assert np.array_equal(logits, ref[1])


def test_the_cli_streams_a_split_set_with_the_resident_tokens(split_set):
    first, _ = split_set
    from hypura_engine.planning import plan_for

    full, _ = plan_for(first, LoadOptions(mode="auto", ctx=256, ram_budget=64 << 30))
    budget = full.used("ram") - sum(r["ffn_bytes"] for r in full.layers) * 6 // 10
    runs = [run_hypura("run", str(first), "--raw", "--temp", "0", "-n", "8", "-p", "hello", "--json", "--ctx", "256",
                       "--mode", mode, "--ram-budget", str(budget)) for mode in ("resident", "dense-stream")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-500:] for r in runs]
    res, streamed = (json.loads(r.stdout) for r in runs)
    assert streamed["mode"] == "dense-stream" and streamed["bytes_from_disk"] > 0
    assert streamed["tokens"] == res["tokens"]
    runner = Runner(first, LoadOptions(mode="dense-stream", ctx=256, ram_budget=budget))
    try:
        items = list(runner.generate(runner.tokenize("hello"),
                                     GenerateOptions(num_predict=8, sampling=SamplingOptions(temperature=0))))
    finally:
        runner.close()
    assert items[-1].tokens == res["tokens"]


def test_a_shard_changing_mid_run_is_a_clear_error_naming_it(tmp_path, split_set):
    first, _ = split_set
    for p in first.parent.glob("tiny-*-of-*.gguf"):
        shutil.copyfile(p, tmp_path / p.name)            # copies: the user's files are never written
    st = DenseStreamer(StreamSpec.dense(tmp_path / first.name, range(LAYERS), 2))
    model = st.load_model()
    try:
        with h.LlamaContext(model, h.ContextParams(n_ctx=64), st.eval_filter) as ctx:
            toks = model.tokenize("Hello")
            ctx.decode(toks, 0)
            third = tmp_path / "tiny-00003-of-00003.gguf"
            with open(third, "r+b") as f:
                f.truncate(third.stat().st_size - 4096)
            with pytest.raises(StreamError, match="tiny-00003-of-00003.gguf: the model file changed"):
                ctx.decode([5], len(toks))
    finally:
        model.close()
        st.close()


@pytest.fixture(scope="module")
def kquant_split(tmp_path_factory, llama_bin):
    """A tiny dense model written in F16, quantized to Q4_K_M by the vendored llama-quantize (ffn_down Q6_K in
    some layers, Q4_K in others) and split into 3 shards by llama-gguf-split."""
    d = tmp_path_factory.mktemp("kquant")
    src = write_synthetic(d / "f16.gguf", "llama3-70b", layers=8, scale=16, vocab=512, qtype="F16")
    subprocess.run([str(llama_bin / "llama-quantize"), str(src), str(d / "q4km.gguf"), "Q4_K_M"], check=True,
                   capture_output=True)
    subprocess.run([str(llama_bin / "llama-gguf-split"), "--split", "--split-max-tensors", "30", str(d / "q4km.gguf"),
                    str(d / "kq")], check=True, capture_output=True)
    return d / "kq-00001-of-00003.gguf"


@pytest.mark.parametrize("repack", [True, False])
def test_a_split_k_quant_mix_streams_bit_identical_and_without_repacking_does_not(kquant_split, repack):
    """Per-layer types (two slot-layout sizes), repacked Q4_K weights, three shards: equal to the reference;
    the negative control (repack overrides off) differs."""
    from hypura_streaming.repack import cpu_computes

    if not repack and not cpu_computes():
        pytest.skip("repacking is what the CPU does")
    ref = reference_greedy(kquant_split, n=8)
    st = DenseStreamer(StreamSpec.dense(kquant_split, range(8), 2), repack=repack)
    model = st.load_model()
    try:
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8)
        stats = st.stats()
        sizes = {lay.size for lay in st.layouts}
    finally:
        model.close()
        st.close()
    assert len(sizes) > 1
    if repack:
        assert toks == ref[0] and np.array_equal(logits, ref[1])
        assert stats["bytes_repacked"] > 0 or not cpu_computes()
    else:
        assert stats["bytes_repacked"] == 0 and not np.array_equal(logits, ref[1])

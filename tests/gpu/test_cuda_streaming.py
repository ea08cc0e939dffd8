"""On a CUDA GPU (the lent H100): both streaming modes keep their slots in VRAM, the streamed
matmuls run on the GPU (scheduler assignments), and greedy tokens equal the fully resident GPU run."""
from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest

import hypura_llama as h
from hypura_synthetic import TINY, write_synthetic
from hypura_streaming import DenseStreamer, DirectReader, ExpertStreamer, OwnedLoad, StreamSpec
from helpers import greedy_with_logits

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    devs = h.gpu_devices()
    if not devs:
        pytest.skip("no GPU device in this build")
    return devs[0]


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _greedy(model, filt=None, n=12, ubatch=512, capture=None):
    logger = logging.getLogger("llama.cpp")
    if capture is not None:
        os.environ["GGML_SCHED_DEBUG"] = "2"
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
    try:
        return greedy_with_logits(model, filt, n=n, ubatch=ubatch, n_ctx=256)
    finally:
        if capture is not None:
            os.environ.pop("GGML_SCHED_DEBUG", None)
            logger.removeHandler(capture)
            logger.setLevel(logging.NOTSET)


def _backends_of(lines, pattern):
    """Backend names the scheduler assigned to nodes whose name matches `pattern`."""
    out = set()
    for line in lines:
        m = re.search(r"node #\s*\d+ \(\s*([A-Z_]+)\):\s+(\S+) \(\s*[\d.]+\s*\w*\) \[\s*(\w+)", line)
        if m and re.fullmatch(pattern, m.group(2)) and m.group(1) in ("MUL_MAT", "MUL_MAT_ID") and \
                (m.group(1) == "MUL_MAT_ID" or pattern != ".*"):
            out.add(m.group(3))
    return out


def _resident(path, ubatch=512):
    """The reference: the fully resident GPU run as `--mode resident` loads it (llama.cpp's defaults)."""
    with h.LlamaModel.load(path, h.ModelParams(n_gpu_layers=-1)) as m:
        return _greedy(m, ubatch=ubatch)


def _resident_owned(path, ubatch=512):
    """Fully resident through the same owned loader the streamers use (same graph, nothing streamed)."""
    reader = DirectReader(path)
    load = OwnedLoad(path, reader, lambda name: False)
    try:
        with load.load(h.ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False)) as m:
            return _greedy(m, ubatch=ubatch)
    finally:
        load.close()
        reader.close()


@pytest.mark.parametrize("qtype", ["F16", "Q4_0"])
def test_dense_streaming_on_the_gpu(tmp_path, gpu, qtype):
    path = write_synthetic(tmp_path / "dense.gguf", "llama3-70b", qtype=qtype, **{**TINY["llama3-70b"], "layers": 4})
    st = DenseStreamer(StreamSpec.dense(path, [1, 2, 3], 2), device=gpu)
    model = st.load_model()
    lines = _Lines()
    try:
        toks, logits = _greedy(model, st.eval_filter, capture=lines)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    ref_toks, _ = _resident(path)
    assert toks == ref_toks                               # the user-facing invariant
    _, same_graph = _resident_owned(path)
    print("max |logit - resident (same loader)|:", np.abs(logits - same_graph).max())
    assert np.allclose(logits, same_graph, atol=1e-2)     # only the streaming differs: kernels match
    assert stats["streamed_ops_on_gpu"] and stats["bytes_uploaded"] > 0
    assert _backends_of(lines.lines, r"ffn_(gate|up|down)-[123]") == {"CUDA0"}


def test_dense_streaming_of_a_long_prompt_on_the_gpu(tmp_path, gpu):
    """A prompt of well over 32 tokens in one ubatch: from that batch size llama.cpp's scheduler offloads
    the ops of weights in host memory to the GPU. Streamed tokens equal the resident run's."""
    path = write_synthetic(tmp_path / "dense.gguf", "llama3-70b", qtype="Q4_0", **{**TINY["llama3-70b"], "layers": 4})
    prompt = "The quick brown fox jumps over the lazy dog. " * 8

    def owned(is_streamed, filt=None):
        reader = DirectReader(path)
        load = OwnedLoad(path, reader, is_streamed)
        try:
            with load.load(h.ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False)) as m:
                return len(m.tokenize(prompt)), greedy_with_logits(m, filt, n=8, ubatch=512, n_ctx=512, prompt=prompt)
        finally:
            load.close()
            reader.close()

    n_prompt, (ref_toks, ref_logits) = owned(lambda name: False)
    st = DenseStreamer(StreamSpec.dense(path, [1, 2, 3], 2), device=gpu)
    model = st.load_model()
    try:
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8, ubatch=512, n_ctx=512, prompt=prompt)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    print(f"prompt {n_prompt} tokens; max |logit - resident (same loader)|:", np.abs(logits - ref_logits).max())
    assert n_prompt >= 32 and stats["streamed_ops_on_gpu"]
    assert toks == ref_toks
    assert np.allclose(logits, ref_logits, atol=1e-2)


@pytest.mark.parametrize("preset", ["mixtral-8x7b", "deepseek-v3"])
def test_expert_streaming_of_a_long_prompt_in_one_ubatch_on_the_gpu(tmp_path, gpu, preset):
    """A VRAM cache holding a whole layer's experts takes llama.cpp's default ubatch: a prompt of well over
    32 tokens goes in one ubatch (the union of its experts, every layer). Tokens equal the resident run's."""
    path = write_synthetic(tmp_path / "moe.gguf", preset, qtype="Q4_0", **TINY[preset])
    shape = TINY[preset]
    n_exp = 16 if preset == "deepseek-v3" else 8
    prompt = "The quick brown fox jumps over the lazy dog. " * 8
    layers = range(shape.get("dense_lead", 0), shape["layers"])
    st = ExpertStreamer(StreamSpec.experts(path, layers, n_exp + 2), device=gpu)
    model = st.load_model()
    try:
        assert st.max_ubatch == 512
        n_prompt = len(model.tokenize(prompt))
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8, ubatch=512, n_ctx=512, prompt=prompt)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    with h.LlamaModel.load(path, h.ModelParams(n_gpu_layers=-1)) as m:
        ref_toks, _ = greedy_with_logits(m, n=8, ubatch=512, n_ctx=512, prompt=prompt)
    assert n_prompt >= 32 and stats["passes"] == 1 + 8 and stats["streamed_ops_on_gpu"]
    assert toks == ref_toks


@pytest.mark.parametrize("preset,qtype,slots,ram_slots,warm", [
    ("mixtral-8x7b", "F16", 4, 0, False), ("mixtral-8x7b", "Q4_0", 4, 0, False),
    ("mixtral-8x7b", "Q4_0", 4, 6, False),
    # more VRAM slots than one layer's experts: the neutral per-expert side tensors must span the slots
    ("mixtral-8x7b", "Q4_0", 12, 0, False), ("deepseek-v3", "Q4_0", 24, 0, False),
    ("mixtral-8x7b", "Q4_0", 6, 4, True),      # warm start: preloaded into VRAM and the pinned RAM tier
])
def test_expert_streaming_on_the_gpu(tmp_path, gpu, preset, qtype, slots, ram_slots, warm):
    """A small VRAM expert cache; with ram_slots, a pinned RAM cache behind it."""
    path = write_synthetic(tmp_path / "moe.gguf", preset, qtype=qtype, **TINY[preset])
    shape = TINY[preset]
    layers = range(shape.get("dense_lead", 0), shape["layers"])
    if warm:    # routing counts of an earlier run seed the caches
        first = ExpertStreamer(StreamSpec.experts(path, layers, slots, ram_slots=ram_slots), device=gpu)
        m = first.load_model()
        try:
            _greedy(m, first.eval_filter, ubatch=first.max_ubatch)
            counts = first.routing_counts()
        finally:
            m.close()
            first.close()
    st = ExpertStreamer(StreamSpec.experts(path, layers, slots, ram_slots=ram_slots), device=gpu)
    model = st.load_model()
    lines = _Lines()
    try:
        if warm:
            assert st.warm_start(counts)["warm_start_experts"] > 0
        toks, logits = _greedy(model, st.eval_filter, ubatch=st.max_ubatch, capture=lines)
        stats = st.stats()
    finally:
        model.close()
        st.close()
    ref_toks, _ = _resident(path, ubatch=st.max_ubatch)
    assert toks == ref_toks
    _, same_graph = _resident_owned(path, ubatch=st.max_ubatch)
    print("max |logit - resident (same loader)|:", np.abs(logits - same_graph).max())
    assert stats["streamed_ops_on_gpu"] and (warm or stats["experts_loaded"] > 0)
    if ram_slots and not warm:
        assert stats["ram_cache_hits"] > 0 and stats["bytes_from_ram"] > 0
    assert _backends_of(lines.lines, r".*") == {"CUDA0"}  # every MUL_MAT_ID (all MoE layers stream) on the GPU


@pytest.mark.parametrize("preset,odd", [("mixtral-8x7b", "blk.1.ffn_down_exps.weight"), ("gpt-oss-20b", None)])
def test_expert_streaming_of_per_layer_types_and_side_tensors_on_the_gpu(tmp_path, gpu, monkeypatch, preset, odd):
    """Per-layer types (one layer's down experts Q8_0 among F16: slots sized for the largest, each layer's tensor
    its own type with nb[2] = the slot size; assumed: CUDA's MUL_MAT_ID honours nb[2] as the CPU's does) and
    gpt-oss's per-expert biases (ADD_ID by the remapped ids: slot-indexed side regions): resident's tokens."""
    from gguf import GGMLQuantizationType

    from hypura_synthetic import writer

    if odd:
        plain = writer._type_of
        monkeypatch.setattr(writer, "_type_of",
                            lambda t, q: GGMLQuantizationType.Q8_0 if t.name == odd else plain(t, q))
    path = write_synthetic(tmp_path / "moe.gguf", preset, qtype="F16", **TINY[preset])
    st = ExpertStreamer(StreamSpec.experts(path, range(TINY[preset]["layers"]), 4), device=gpu)
    model = st.load_model()
    lines = _Lines()
    try:
        toks, logits = _greedy(model, st.eval_filter, ubatch=st.max_ubatch, capture=lines)
        stats = st.stats()
        kinds = set(st.layout.kinds)
    finally:
        model.close()
        st.close()
    ref_toks, ref_logits = _resident(path, ubatch=st.max_ubatch)
    print("max |logit - resident|:", np.abs(logits - ref_logits).max())
    assert toks == ref_toks
    assert odd or {"gate.bias", "up.bias", "down.bias"} <= kinds
    assert stats["streamed_ops_on_gpu"] and stats["experts_loaded"] > 0
    assert _backends_of(lines.lines, r".*") == {"CUDA0"}


@pytest.mark.parametrize("preset,mode", [("llama3-70b", "dense-stream"), ("mixtral-8x7b", "expert-stream")])
def test_gpu_budget_is_held(tmp_path, gpu, preset, mode):
    """Through the engine (plan → streamer): the GPU memory the run takes stays within --gpu-budget plus
    cuBLAS/stream workspaces (256 MiB), on a model ~2.2x the budget, and the tokens equal resident."""
    from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions

    path = write_synthetic(tmp_path / "m.gguf", preset, layers=8, scale=2, vocab=512, qtype="Q4_0")
    size = path.stat().st_size
    budget = size * 45 // 100
    opts = GenerateOptions(num_predict=12, sampling=SamplingOptions(temperature=0))
    ref = Runner(path, LoadOptions(mode="resident", ctx=512))
    try:
        want = list(ref.generate(ref.tokenize("The quick brown fox"), opts))[-1].tokens
    finally:
        ref.close()
    free0 = next(d for d in h.gpu_devices() if d.name == gpu.name).memory_free
    runner = Runner(path, LoadOptions(mode="auto", ctx=512, gpu_budget=budget))
    try:
        got = list(runner.generate(runner.tokenize("The quick brown fox"), opts))[-1].tokens
        used = free0 - next(d for d in h.gpu_devices() if d.name == gpu.name).memory_free
        stats = runner.stats()
    finally:
        runner.close()
    print(f"{preset}: model {size >> 20} MiB, budget {budget >> 20} MiB, GPU memory used {used >> 20} MiB")
    assert runner.mode == mode and stats["streamed_ops_on_gpu"]
    assert used <= budget + (256 << 20), (used, budget)
    assert budget + (256 << 20) < size          # the bound excludes holding the model
    if mode == "dense-stream":                  # quantized MoE prefill is chunked: batch-size numerics
        assert got == want


def test_profile_measures_upload_bandwidth(gpu):
    """`hypura profile`'s host→device figure is measured (pinned → VRAM), not the planner's default."""
    from hypura_hardware.devices import measure_upload_bps

    bps = measure_upload_bps({"name": gpu.name})
    print(f"{gpu.name}: upload {bps / 1e9:.1f} GB/s")
    assert 2e9 < bps < 200e9            # PCIe/NVLink range; a bogus timer would land outside
    assert h.measure_upload_bandwidth("CPU") is None

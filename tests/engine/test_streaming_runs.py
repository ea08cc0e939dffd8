"""Streaming through the engine and CLI: the plan's mode, the same tokens (and on the CPU bit-identical logits)
as THE reference — `--mode resident` with default settings, weights repacked where llama.cpp repacks them —
and bounded memory."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions
from hypura_synthetic import write_synthetic
from helpers import run_hypura

# Python, numpy, llama.cpp's libraries and CPU backend, thread stacks: what a process costs before weights.
FIXED_OVERHEAD = 320 << 20


def _tokens_and_logits(runner, n=12, prompt="Why is the sky blue?"):
    logits = []
    opts = GenerateOptions(num_predict=n, sampling=SamplingOptions(temperature=0))
    items = list(runner.generate(runner.tokenize(prompt), opts,
                                 on_logits=lambda lg: logits.append(lg.copy())))
    return items[-1].tokens, np.stack(logits)


def test_default_model_with_half_its_ffn_layers_streamed(default_model):
    """A RAM budget that forces at least half of the FFN layers to NVMe: same greedy tokens and
    bit-identical logits as the reference."""
    resident = Runner(default_model, LoadOptions(mode="resident", ctx=512))
    try:
        ref_toks, ref_logits = _tokens_and_logits(resident)
    finally:
        resident.close()
    from hypura_engine.planning import plan_for

    full, _ = plan_for(default_model, LoadOptions(mode="auto", ctx=512, ram_budget=64 << 30))
    ffn = sum(r["ffn_bytes"] for r in full.layers)
    budget = full.used("ram") - ffn * 6 // 10   # everything resident needs `used`; drop 60% of the FFN bytes
    runner = Runner(default_model, LoadOptions(mode="auto", ctx=512, ram_budget=budget))
    try:
        assert runner.mode == "dense-stream"
        assert len(runner.plan.streamed_layers["nvme"]) >= 9
        toks, logits = _tokens_and_logits(runner)
        stats = runner.stats()
    finally:
        runner.close()
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    assert stats["bytes_from_disk"] > 0 and stats["direct_io"]


def test_the_issue_case_dense_stream_at_810m_equals_resident(default_model):
    """Issue 14: `hypura run <default model> --raw --temp 0 -n 32 -p "Once upon a time" --mode dense-stream
    --ram-budget 810M` gave other text than `--mode resident` (CPU_REPACK weights): now the same tokens,
    bit-identical logits; and through the CLI, the same tokens."""
    prompt = "Once upon a time"
    resident = Runner(default_model, LoadOptions(mode="resident"))
    try:
        ref_toks, ref_logits = _tokens_and_logits(resident, n=32, prompt=prompt)
    finally:
        resident.close()
    runner = Runner(default_model, LoadOptions(mode="dense-stream", ram_budget=810 << 20))
    try:
        toks, logits = _tokens_and_logits(runner, n=32, prompt=prompt)
        stats = runner.stats()
    finally:
        runner.close()
    assert stats["streamed_layers"] >= 1 and stats["bytes_from_disk"] > 0
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    cli = [run_hypura("run", str(default_model), "--raw", "--temp", "0", "-n", "32", "-p", prompt, "--json",
                      "--mode", mode, "--ram-budget", "810M") for mode in ("resident", "dense-stream")]
    assert all(r.returncode == 0 for r in cli), [r.stderr[-500:] for r in cli]
    out = [json.loads(r.stdout) for r in cli]
    assert out[1]["mode"] == "dense-stream" and out[1]["tokens"] == out[0]["tokens"] == toks


@pytest.fixture(scope="module")
def big_dense(tmp_path_factory):
    """A dense llama3-shaped model whose FFN weights dominate (~490 MB)."""
    return write_synthetic(tmp_path_factory.mktemp("big") / "dense.gguf", "llama3-70b", layers=16, scale=4,
                           vocab=512, qtype="Q4_0")


def test_peak_rss_stays_within_the_ram_budget(big_dense):
    size = big_dense.stat().st_size
    budget = size // 3
    res = run_hypura("run", str(big_dense), "--raw", "--temp", "0", "-n", "4", "-p", "hello", "--json",
                     "--ctx", "256", "--ram-budget", str(budget))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["mode"] == "dense-stream"
    assert out["bytes_from_disk"] >= 3 * out["disk_bytes_per_pass"]
    assert out["peak_rss_bytes"] <= budget + FIXED_OVERHEAD, (out["peak_rss_bytes"], budget)
    assert out["peak_rss_bytes"] < size  # the model was never wholly in memory


def test_budget_too_small_for_one_slot_is_a_clear_error(big_dense):
    res = run_hypura("run", str(big_dense), "-p", "hi", "--ctx", "256", "--ram-budget", "20M")
    assert res.returncode == 2
    assert "too small" in res.stderr and "at least" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A llama-shaped model with an untied 32k-row embedding (18 MB of its ~85 MB)."""
    return write_synthetic(tmp_path_factory.mktemp("untied") / "untied.gguf", "llama3-70b", layers=6, scale=8,
                           vocab=32000, qtype="Q4_0")


def test_an_untied_embedding_is_computed_from_the_file_on_the_cpu(untied):
    """Streaming on the CPU leaves the token embedding (a row a token) in the file, mapped read-only: the plan
    gives its bytes to the FFN, the streamer maps it, and the output is still the reference's, bit for bit."""
    resident = Runner(untied, LoadOptions(mode="resident", ctx=256))
    try:
        ref_toks, ref_logits = _tokens_and_logits(resident, n=8)
    finally:
        resident.close()
    from hypura_engine.planning import plan_for
    from hypura_placement import inspect_model

    emb = next(t.nbytes for t in inspect_model(untied).tensors if t.name == "token_embd.weight")
    full, _ = plan_for(untied, LoadOptions(mode="auto", ctx=256, ram_budget=64 << 30))
    opts = LoadOptions(mode="auto", ctx=256, ram_budget=full.used("ram") - emb)
    runner = Runner(untied, opts)
    try:
        assert runner.mode == "dense-stream"
        assert runner.plan.tensors["token_embd.weight"] == "nvme"
        toks, logits = _tokens_and_logits(runner, n=8)
        stats = runner.stats()
    finally:
        runner.close()
    assert stats["mapped_bytes"] == emb
    assert toks == ref_toks and np.array_equal(logits, ref_logits)

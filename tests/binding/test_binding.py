"""The cffi binding against the real llama.cpp build."""
from __future__ import annotations

import numpy as np
import pytest

import hypura_llama as h
from hypura_engine import SamplingOptions


def test_devices_include_the_cpu():
    devs = h.list_devices()
    assert any(d["type"] == "cpu" for d in devs)
    assert all(d["memory_total"] > 0 for d in devs)
    assert h.backend_name() in ("cpu", "cuda", "metal")


@pytest.fixture(scope="module")
def model(default_model):
    with h.LlamaModel.load(default_model, h.ModelParams(use_extra_bufts=False)) as m:
        yield m


def test_model_metadata_and_vocab(model):
    assert model.n_layer == 18
    assert model.n_vocab == 262144
    assert model.metadata()["general.architecture"] == "gemma3"
    toks = model.tokenize("Why is the sky blue?")
    assert toks[0] == model.bos
    assert model.detokenize(toks[1:]) == "Why is the sky blue?"
    assert b"".join(model.token_to_piece(t) for t in toks[1:]).decode() == "Why is the sky blue?"


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        h.LlamaModel.load(tmp_path / "nope.gguf")


def _greedy(model, filt=None, n=8):
    with h.LlamaContext(model, h.ContextParams(n_ctx=128), filt) as ctx:
        toks = model.tokenize("The capital of France is")
        ctx.decode(toks, 0)
        out = []
        for i in range(n):
            out.append(int(np.argmax(ctx.logits())))
            ctx.decode([out[-1]], len(toks) + i)
        return out


def test_eval_filter_calls_python_only_for_registered_layers(model):
    seen = []
    filt = h.EvalFilter(lambda t, ask, rule, layer: seen.append((h.tensor_name(t), ask, layer)))
    rule = filt.add_rule("ffn_norm-", "", h.SPLIT)
    for layer in (3, 7):
        filt.set_layer(rule, layer)
    out = _greedy(model, filt, n=4)
    # one prompt pass + 4 decode passes, two layers each, all at ask=False
    assert seen[:2] == [("ffn_norm-3", False, 3), ("ffn_norm-7", False, 7)]
    assert len(seen) == 2 * 5 and filt.n_python == 10
    assert filt.n_calls > 100 * filt.n_python  # every node reached the C filter
    assert out == _greedy(model, n=4)  # splitting the graph changes nothing


def test_eval_handler_error_stops_the_graph_and_is_raised(model):
    def boom(t, ask, rule, layer):
        raise RuntimeError("read failed")

    filt = h.EvalFilter(boom)
    filt.add_rule("ffn_norm-", "", h.SPLIT, layers=[5])
    with h.LlamaContext(model, h.ContextParams(n_ctx=64), filt) as ctx:
        with pytest.raises(RuntimeError, match="read failed"):
            ctx.decode(model.tokenize("Hello"), 0)
        assert filt.error is None  # taken, and the filter re-armed


def test_sampler_greedy_matches_argmax(model):
    with h.LlamaContext(model, h.ContextParams(n_ctx=64)) as ctx, \
            h.Sampler(model, SamplingOptions(temperature=0)) as s:
        ctx.decode(model.tokenize("One, two, three,"), 0)
        assert s.sample(ctx) == int(np.argmax(ctx.logits()))


def test_seeded_sampling_is_reproducible(model):
    def draw(seed):
        with h.LlamaContext(model, h.ContextParams(n_ctx=64)) as ctx, \
                h.Sampler(model, SamplingOptions(temperature=1.0, top_k=50, seed=seed)) as s:
            ctx.decode(model.tokenize("Once upon a time"), 0)
            return s.sample(ctx)

    assert draw(7) == draw(7)

"""Synthetic models: real names and shapes, valid zero-mean non-repeating values, skew, vocabulary, seeds."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

from hypura_placement import inspect_model, validate_gguf
from hypura_synthetic import ARCH_SHAPES, TINY, build_vocab, gain_for_skew, hot_share, tensor_specs
from hypura_synthetic.vocab import byte_symbols


@pytest.mark.parametrize("preset", sorted(ARCH_SHAPES))
def test_tiny_presets_are_complete_files(synthetic, preset):
    p = synthetic(preset)
    h = validate_gguf(p)
    assert h.data_end <= h.file_size and h.kv["general.architecture"] == ARCH_SHAPES[preset].arch
    m = inspect_model(p)
    shape = ARCH_SHAPES[preset].scaled(**TINY[preset])
    assert [t.name for t in m.tensors] == [s.name for s in tensor_specs(shape)]
    assert [t.shape for t in m.tensors] == [s.shape for s in tensor_specs(shape)]
    assert "other" not in {t.role for t in m.tensors}
    assert m.n_expert == shape.n_expert and m.n_vocab == 512


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "F16"])
def test_values_valid_zero_mean_non_repeating(synthetic, qtype):
    p = synthetic("mixtral-8x7b", layers=2, scale=16, vocab=512, qtype=qtype)
    r = GGUFReader(p)
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float64).ravel()
        assert np.isfinite(w).all(), t.name
        if t.name.endswith("norm.weight"):
            assert (w == 1).all()
            continue
        if t.n_elements < 4096:
            continue
        std = w.std()
        assert 0 < std < 1 and abs(w.mean()) < 0.02 * std, t.name          # zero mean (Q4_0 codes alone: -0.5)
        assert 0.3 / np.sqrt(t.shape[0]) < std < 3 / np.sqrt(t.shape[0]), t.name
        rows = np.asarray(t.data).reshape(-1, np.asarray(t.data).shape[-1])[:2048]
        assert len({r.tobytes() for r in rows}) == len(rows), t.name      # no repeated rows


def test_seed_makes_files_reproducible(tmp_path):
    from hypura_synthetic import write_synthetic

    digest = [hashlib.sha256(write_synthetic(tmp_path / f"{i}.gguf", "llama3-70b", seed=s, **TINY["llama3-70b"])
                             .read_bytes()).hexdigest() for i, s in enumerate((1, 1, 2))]
    assert digest[0] == digest[1] != digest[2]


def test_routing_skew_knob(synthetic):
    assert hot_share(128, 8, 1.0) == pytest.approx(0.1, abs=0.02)            # uniform: the top 10% get ~10%
    gain, share = gain_for_skew(128, 8, 0.8)
    assert gain > 1 and share == pytest.approx(0.8, abs=0.03)
    assert gain_for_skew(8, 2, 0.8)[1] <= 0.5 + 1e-9                          # top-2 of 8: one hot expert ≤ 50%
    p = synthetic("qwen3-30b-a3b", layers=2, scale=8, experts=128, vocab=512, skew=0.8)
    r = GGUFReader(p)
    kv = {f.name: float(f.contents()) for f in r.fields.values() if f.name.startswith("hypura.synthetic.")
          and f.name != "hypura.synthetic.preset"}
    assert kv["hypura.synthetic.skew"] == pytest.approx(0.8)
    assert kv["hypura.synthetic.hot_share_gaussian"] == pytest.approx(share, abs=1e-6)
    router = next(t for t in r.tensors if t.name == "blk.1.ffn_gate_inp.weight")
    norms = np.linalg.norm(np.asarray(router.data).reshape(128, -1), axis=1)
    hot = norms > np.median(norms) * 1.5
    assert hot.sum() == 13                                                    # ceil(10% of 128) experts scaled up
    x = np.random.default_rng(5).standard_normal((4000, np.asarray(router.data).shape[-1]))
    top = np.argsort(-(x @ np.asarray(router.data).reshape(128, -1).T), axis=1)[:, :8]
    assert hot[top].mean() == pytest.approx(share, abs=0.05)                  # the file's router really skews


def test_residual_knob_scales_only_what_writes_into_the_residual_stream(synthetic):
    """--residual G: attention output and (expert) down projections have G times the RMS, every other weight is
    the default file's; G = 1 writes the same bytes as before the knob existed (same seed, same file)."""
    kw = dict(layers=2, scale=8, experts=128, vocab=512, skew=0.8)
    base, same, small = (synthetic("qwen3-30b-a3b", **kw), synthetic("qwen3-30b-a3b", residual=1.0, **kw),
                         synthetic("qwen3-30b-a3b", residual=0.05, **kw))
    assert hashlib.sha256(base.read_bytes()).digest() == hashlib.sha256(same.read_bytes()).digest()

    def rms(path):
        return {t.name: float(np.sqrt(np.mean(dequantize(t.data, t.tensor_type).astype(np.float64) ** 2)))
                for t in GGUFReader(path).tensors if t.name.startswith("blk.1.") and t.name.endswith(".weight")
                and t.tensor_type.name == "Q4_0"}
    b, s = rms(base), rms(small)
    for name in b:
        ratio = s[name] / b[name]
        if name.split(".")[2] in ("attn_output", "ffn_down_exps"):
            assert ratio == pytest.approx(0.05, rel=0.1), name
        else:
            assert ratio == pytest.approx(1.0, rel=1e-6), name
    assert {"blk.1.attn_output.weight", "blk.1.ffn_down_exps.weight", "blk.1.attn_q.weight"} <= set(b)
    with pytest.raises(ValueError, match="residual"):
        synthetic("qwen3-30b-a3b", residual=0.0, **kw)


def test_vocabulary_is_consistent():
    tokens, merges, types = build_vocab(1000)
    assert len(tokens) == len(types) == 1000 and len(set(tokens)) == 1000
    assert tokens[:256] == byte_symbols() and types[-2:] == [3, 3]
    vocab = set(tokens)
    for m in merges:
        left, right = m.split(" ")
        assert left in vocab and right in vocab and left + right in vocab
    big, _, _ = build_vocab(163840)
    assert len(big) == len(set(big)) == 163840


def test_header_only_full_size_is_small(header_only_models):
    for preset, p in header_only_models.items():
        h = validate_gguf(p, allow_header_only=True)
        assert h.header_only and h.file_size < 16 << 20 and h.data_end > 1e9, preset

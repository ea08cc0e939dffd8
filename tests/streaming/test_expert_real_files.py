"""Expert streaming of files made the way users get them: tiny F16 synthetic models quantized by llama.cpp's own
`llama-quantize` (K-quant recipes give `ffn_down_exps` other types by layer; Q4_K/Q2_K/IQ4_NL/MXFP4 experts are
repacked by the CPU's default load), and gpt-oss's per-expert biases. Every run is compared with THE reference:
the model loaded as `--mode resident` loads it (llama.cpp's default parameters): same tokens, bit-identical
logits. Negative controls: repacked slots filled by a raw copy, bias rows left unfilled — both must differ."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import hypura_llama as h
from hypura_streaming import ExpertStreamer, StreamSpec
from hypura_streaming.experts.memory import ExpertMemory, memmove
from hypura_synthetic import TINY, write_synthetic
from hypura_synthetic.presets import COMPAT
from hypura_synthetic.realfiles import quantize
from helpers import greedy_with_logits

NAMES = ["mixtral-8x7b", "qwen3-30b-a3b"]
KQUANTS = ["Q4_K_M", "Q2_K", "IQ4_XS"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("realfiles")
    out = {}
    for name in NAMES:
        f16 = write_synthetic(d / f"{name}-F16.gguf", name, qtype="F16", skew=0.0, **COMPAT[name])
        for q in KQUANTS:
            out[name, q] = str(quantize(f16, d / f"{name}-{q}.gguf", q))
    f16 = write_synthetic(d / "gpt-oss-F16.gguf", "gpt-oss-20b", qtype="F16", skew=0.0, **TINY["gpt-oss-20b"])
    out["gpt-oss-20b", "F16"] = str(f16)
    out["gpt-oss-20b", "MXFP4_MOE"] = str(quantize(f16, d / "gpt-oss-MXFP4_MOE.gguf", "MXFP4_MOE"))
    return out


def _shape(path) -> tuple[int, int, int]:
    with h.LlamaModel.load(path, h.ModelParams(vocab_only=True)) as m:
        meta = m.metadata()
    arch = meta["general.architecture"]
    return int(meta[f"{arch}.expert_count"]), int(meta[f"{arch}.expert_used_count"]), int(meta[f"{arch}.block_count"])


@lru_cache(maxsize=None)
def _resident(path, ubatch):
    """The reference: `--mode resident`'s load (llama.cpp's default model parameters)."""
    with h.LlamaModel.load(path) as m:
        return greedy_with_logits(m, n=8, ubatch=ubatch)


def _stream(path, slots=None):
    n_exp, n_used, n_layer = _shape(path)
    st = ExpertStreamer(StreamSpec.experts(path, range(n_layer), slots or max(n_used, n_exp // 2)))
    model = st.load_model()
    try:
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8, ubatch=st.max_ubatch)
        return toks, logits, st.stats(), st.layout, st.max_ubatch
    finally:
        model.close()
        st.close()


@pytest.mark.parametrize("qtype", KQUANTS)
@pytest.mark.parametrize("name", NAMES)
def test_llama_quantize_files_stream_bit_identical_to_resident(files, name, qtype):
    path = files[name, qtype]
    toks, logits, stats, lay, ubatch = _stream(path)
    ref_toks, ref_logits = _resident(path, ubatch)
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)
    assert stats["experts_loaded"] > 0
    if qtype == "Q4_K_M":   # Q6_K down experts in some layers, Q4_K in the others: one slot size for both
        down = {lay.nbytes[k] for k in lay.nbytes if k[1] == "down"}
        assert len(down) == 2 and lay.kinds["down"].stride == max(down)
        print(f"{name} {qtype}: bytes of one cache slot (largest of each kind) {lay.ram_stride}, mean expert "
              f"{lay.slot_bytes_mean:.0f} (+{lay.ram_stride / lay.slot_bytes_mean - 1:.1%})")
    if qtype in ("Q4_K_M", "Q2_K"):   # Q4_K / Q2_K experts: kept repacked, as the reference computes them
        assert lay.repacked and not any(lay.in_place[k][0] for k in lay.repacked)
        assert stats["repacked_fraction"] > 0
    else:                              # IQ4_XS: no repacked layout on this CPU
        assert not lay.repacked


def test_repacked_slots_filled_by_a_raw_copy_differ(files, monkeypatch):
    """Negative control: the same run with the repacked experts' bytes copied raw into their slots (as a read in
    place would land them) no longer matches the reference."""
    path = files["mixtral-8x7b", "Q4_K_M"]
    real = ExpertMemory.put

    def raw(self, layer, kind, slot, pos, src, nb):
        if (layer, kind) in self.layout.repacked:
            memmove(self.slot_ptr(layer, kind, slot) + pos, src, nb)
        else:
            real(self, layer, kind, slot, pos, src, nb)

    monkeypatch.setattr(ExpertMemory, "put", raw)
    toks, logits, _, lay, ubatch = _stream(path)
    ref_toks, ref_logits = _resident(path, ubatch)
    assert lay.repacked
    assert not np.array_equal(logits, ref_logits)
    assert np.abs(logits - ref_logits).max() > 1e-3


@pytest.mark.parametrize("qtype", ["F16", "MXFP4_MOE"])
def test_gpt_oss_per_expert_biases_follow_the_slots(files, qtype):
    """gpt-oss's `ffn_{gate,up,down}_exps.bias` [n, n_expert] are indexed (ADD_ID) by the remapped ids: each
    selected expert's row lands in its slot of a slot-indexed side region; MXFP4 experts (MXFP4_MOE) repacked."""
    path = files["gpt-oss-20b", qtype]
    toks, logits, stats, lay, ubatch = _stream(path)
    ref_toks, ref_logits = _resident(path, ubatch)
    assert {"gate.bias", "up.bias", "down.bias"} <= set(lay.kinds)
    assert all(lay.kinds[k].expert_dim == 1 for k in ("gate.bias", "up.bias", "down.bias"))
    assert bool(lay.repacked) == (qtype == "MXFP4_MOE")
    assert toks == ref_toks
    assert np.array_equal(logits, ref_logits)


def test_bias_rows_left_unfilled_differ(files, monkeypatch):
    """Negative control: bias rows never written into their slots (the side region keeps zeros) changes the
    output, so the check above is not vacuous."""
    path = files["gpt-oss-20b", "F16"]
    real = ExpertMemory.put
    monkeypatch.setattr(ExpertMemory, "put", lambda self, layer, kind, *a: None if kind.endswith(".bias")
                        else real(self, layer, kind, *a))
    _, logits, _, _, ubatch = _stream(path)
    _, ref_logits = _resident(path, ubatch)
    assert np.abs(logits - ref_logits).max() > 1e-3

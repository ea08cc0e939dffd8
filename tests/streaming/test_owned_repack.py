"""Repacked storage for streamed weights: converting a tensor in place, part by part, gives the bytes that
llama.cpp's whole-tensor conversion gives (so the bit-identity tests test the layout, not luck); the
repack decision skips what llama.cpp never repacks."""
from __future__ import annotations

import numpy as np
import pytest

import hypura_llama as h
from hypura_llama import ffi, lib
from hypura_streaming.pool import REPACK_ROWS, HostSlotPool, RepackSlots
from hypura_streaming.repack import repack_buffer_type, repack_overrides

NE0 = 1024   # 32 Q4_0 blocks per row


def _tensor(rows: int):
    t = ffi.new("struct ggml_tensor *")
    t.type = lib.GGML_TYPE_Q4_0
    t.ne[0], t.ne[1], t.ne[2], t.ne[3] = NE0, rows, 1, 1
    t.nb[0] = lib.ggml_type_size(t.type)
    t.nb[1] = lib.ggml_row_size(t.type, NE0)
    t.nb[2] = t.nb[3] = rows * t.nb[1]
    return t


@pytest.mark.parametrize("rows", [24, REPACK_ROWS, 3 * REPACK_ROWS + 8])
def test_in_place_conversion_equals_whole_tensor_conversion(rows):
    buft = h.cpu_weight_buffer_type(lib.GGML_TYPE_Q4_0, (NE0, rows))
    if buft is None:
        pytest.skip("this CPU build repacks no Q4_0 weights")
    raw = np.random.default_rng(rows).integers(0, 256, rows * lib.ggml_row_size(lib.GGML_TYPE_Q4_0, NE0),
                                               dtype=np.uint8)
    pool = HostSlotPool(1, raw.nbytes, repack_type=buft)
    whole = RepackSlots(buft, 1, raw.nbytes)
    a, b = _tensor(rows), _tensor(rows)
    try:
        pool.repoint(a, 0, 0, repacked=True)
        whole.repoint(b, 0, 0)
        assert a.extra == b.extra != ffi.NULL
        ffi.memmove(a.data, ffi.from_buffer(raw), raw.nbytes)       # the file's bytes, read in place
        pool.repacker.convert(a)
        whole.fill(b, int(ffi.cast("uintptr_t", ffi.from_buffer(raw))))
        got = bytes(ffi.buffer(ffi.cast("char *", a.data), raw.nbytes))
        want = bytes(ffi.buffer(ffi.cast("char *", b.data), raw.nbytes))
        assert got == want and got != raw.tobytes()                 # converted, and like the whole
    finally:
        pool.close()
        whole.close()


def test_the_decision_skips_what_llama_cpp_never_repacks():
    q4 = lib.GGML_TYPE_Q4_0
    for name in ("token_embd.weight", "blk.0.attn_norm.weight", "blk.0.ffn_up.bias", "blk.3.attn_k_b.weight"):
        shape = (NE0, 256, 8) if name.endswith("k_b.weight") else (NE0, 256)
        assert repack_buffer_type(name, q4, shape) is None, name
    assert repack_buffer_type("blk.0.ffn_up.weight", lib.GGML_TYPE_F32, (NE0, 256)) is None


def test_overrides_group_layers_by_suffix():
    buft = h.BufferType.cpu()
    over = repack_overrides({"blk.0.ffn_up.weight": buft, "blk.10.ffn_up.weight": buft, "blk.2.ffn_up.weight": buft,
                             "output.weight": buft})
    assert [p for p, _ in over] == [r"^blk\.(0|2|10)\.ffn_up\.weight$", r"^output\.weight$"]

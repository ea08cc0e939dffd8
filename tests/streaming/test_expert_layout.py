"""The expert cache's layout, checked against hand-computed offsets (pure: no model, no llama.cpp)."""
from __future__ import annotations

import pytest

from hypura_streaming.experts.layout import ExpertLayout, ExpertTensor

GATE, DOWN = 8192, 3000    # bytes of one expert: whole pages; not


def _t(layer, kind, offset, stride, name=None, n_exp=4):
    return ExpertTensor(name or f"blk.{layer}.ffn_{kind}_exps.weight", layer, kind, (16, 16, n_exp, 1),
                        (2, 32, stride, stride * n_exp), stride * n_exp, ((offset, stride),))


TENSORS = [_t(0, "gate", 10 * 4096 + 32, GATE), _t(0, "down", 100000, DOWN),
           _t(1, "gate", 50 * 4096 + 100, GATE), _t(1, "down", 300000, DOWN)]


def test_host_layout_by_hand():
    lay = ExpertLayout.build("m.gguf", [0, 1], TENSORS, n_slots=3, ram_slots=10, host=True)
    assert (lay.n_expert, lay.n_slots, lay.ram_slots) == (4, 3, 5)    # the RAM tier holds what the cache does not
    # kinds in name order; host slots a page longer; each kind's slots start page-aligned
    assert [(k, v.slot, v.offset, v.ram_offset) for k, v in sorted(lay.kinds.items())] == [
        ("down", DOWN + 4096, 0, 0), ("gate", GATE + 4096, 24576, DOWN)]
    assert lay.region_bytes == 24576 + 36864 and lay.ram_stride == GATE + DOWN
    # each tensor starts at its file misalignment within the slot: whole-page experts are read in place
    assert lay.shift[(0, "gate")] == 32 and lay.shift[(1, "gate")] == 100 and lay.shift[(0, "down")] == 100000 % 4096
    assert lay.in_place == {(0, "gate"): (True,), (0, "down"): (False,), (1, "gate"): (True,), (1, "down"): (False,)}
    assert lay.slot_offset(0, "gate", 2) == 24576 + 32 + 2 * (GATE + 4096)
    assert lay.ram_slot_offset(3, "gate") == 3 * (GATE + DOWN) + DOWN
    assert lay.in_place_fraction == pytest.approx(2 * GATE / (2 * (GATE + DOWN)))
    assert lay.pass_bytes == 4 * 2 * (GATE + DOWN)
    # with a RAM tier every read is staged: a whole expert's pages plus one; else only what is not in place
    assert lay.staging_bytes == GATE + 4096
    assert ExpertLayout.build("m.gguf", [0, 1], TENSORS, 3, 0, host=True).staging_bytes == 4096 + 4096


def test_device_layout_stages_everything_and_caps_the_slots():
    lay = ExpertLayout.build("m.gguf", [0, 1], TENSORS, n_slots=100, ram_slots=4, host=False)
    assert (lay.n_slots, lay.ram_slots) == (8, 0)     # no more slots than experts; nothing left for RAM
    assert all(v.slot == v.stride for v in lay.kinds.values())
    assert set(lay.shift.values()) == {0} and not any(f for flags in lay.in_place.values() for f in flags)
    assert lay.in_place_fraction == 0.0


@pytest.mark.parametrize("tensors,match", [
    (TENSORS[:2] + [_t(1, "gate", 0, GATE), _t(1, "down", 0, 2 * DOWN)],
     r"blk\.1\.ffn_down_exps\.weight: expert size 6000 differs"),
    (TENSORS + [_t(1, "up", 0, GATE, name="blk.1.ffn_up_exps.bias")], "per-expert side tensors are not supported"),
    (TENSORS[:2], r"layer 1 has no routed expert tensors"),
    (TENSORS[:2] + [_t(1, "gate", 0, GATE, n_exp=8)], "has 8 experts, others 4"),
])
def test_unexpected_layouts_are_clear_errors(tensors, match):
    with pytest.raises(ValueError, match=match):
        ExpertLayout.build("m.gguf", [0, 1], tensors, 3, 0, host=True)

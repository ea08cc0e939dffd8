"""The expert cache's layout, checked against hand-computed offsets (pure: no model, no llama.cpp)."""
from __future__ import annotations

import pytest

from hypura_streaming.experts.layout import ExpertLayout, ExpertTensor

GATE, DOWN = 8192, 3000    # bytes of one expert: whole pages; not


def _t(layer, kind, offset, stride, name=None, n_exp=4, repacked=False):
    return ExpertTensor(name or f"blk.{layer}.ffn_{kind}_exps.weight", layer, kind, (16, 16, n_exp, 1),
                        (2, 32, stride, stride * n_exp), stride * n_exp, ((offset, stride),), repacked)


def _bias(layer, kind, offset, n=24, n_exp=4):
    """A per-expert bias [n, n_exp] F32 (gpt-oss's ffn_*_exps.bias)."""
    return ExpertTensor(f"blk.{layer}.ffn_{kind}_exps.bias", layer, f"{kind}.bias", (n, n_exp, 1, 1),
                        (4, 4 * n, 4 * n * n_exp, 4 * n * n_exp), 4 * n * n_exp, ((offset, 4 * n),))


TENSORS = [_t(0, "gate", 10 * 4096 + 32, GATE), _t(0, "down", 100000, DOWN),
           _t(1, "gate", 50 * 4096 + 100, GATE), _t(1, "down", 300000, DOWN)]


def test_host_layout_by_hand():
    lay = ExpertLayout.build("m.gguf", [0, 1], TENSORS, n_slots=3, ram_slots=10, host=True)
    assert (lay.n_expert, lay.n_slots, lay.ram_slots) == (4, 3, 5)    # the RAM tier holds what the cache does not
    # kinds in name order; host slots a page longer where read in place (whole pages), else 64-byte aligned;
    # each kind's slots start page-aligned
    assert [(k, v.slot, v.offset, v.ram_offset) for k, v in sorted(lay.kinds.items())] == [
        ("down", 3008, 0, 0), ("gate", GATE + 4096, 12288, DOWN)]
    assert lay.region_bytes == 12288 + 36864 and lay.ram_stride == GATE + DOWN
    # each tensor read in place starts at its file misalignment within the slot; staged ones at 0
    assert lay.shift[(0, "gate")] == 32 and lay.shift[(1, "gate")] == 100 and lay.shift[(0, "down")] == 0
    assert lay.in_place == {(0, "gate"): (True,), (0, "down"): (False,), (1, "gate"): (True,), (1, "down"): (False,)}
    assert lay.slot_offset(0, "gate", 2) == 12288 + 32 + 2 * (GATE + 4096)
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


def test_per_layer_types_share_slots_sized_for_the_largest():
    """Layer 1's down experts in another type (6000 bytes, as Q6_K beside Q4_K in a Q4_K_M file) and its gate
    experts three pages instead of two: each kind's slots fit its largest expert; each layer reads its own bytes."""
    tensors = TENSORS[:2] + [_t(1, "gate", 50 * 4096 + 100, 3 * 4096), _t(1, "down", 300000, 2 * DOWN)]
    lay = ExpertLayout.build("m.gguf", [0, 1], tensors, n_slots=3, ram_slots=0, host=True)
    assert lay.kinds["down"].stride == 6000 and lay.kinds["down"].slot == 6016
    assert lay.kinds["gate"].stride == 3 * 4096 and lay.kinds["gate"].slot == 4 * 4096
    assert lay.nbytes == {(0, "gate"): GATE, (0, "down"): DOWN, (1, "gate"): 3 * 4096, (1, "down"): 6000}
    assert lay.in_place[(0, "gate")] == lay.in_place[(1, "gate")] == (True,)   # both whole pages, own shifts
    assert (lay.shift[(0, "gate")], lay.shift[(1, "gate")]) == (32, 100)
    assert lay.expert_bytes(0) == GATE + DOWN and lay.expert_bytes(1) == 3 * 4096 + 6000
    assert lay.ram_stride == 3 * 4096 + 6000 and lay.slot_bytes_mean == (GATE + DOWN + 3 * 4096 + 6000) / 2
    assert lay.pass_bytes == 4 * (GATE + DOWN + 3 * 4096 + 6000)


def test_repacked_experts_are_staged_and_side_tensors_get_slots():
    """An expert the CPU keeps repacked is never read in place (its slot holds another layout); a per-expert
    bias [24, n_expert] gets its own kind, indexed by dimension 1, one row per slot."""
    tensors = [_t(0, "gate", 10 * 4096 + 32, GATE, repacked=True), _t(1, "gate", 50 * 4096, GATE),
               _t(0, "down", 100000, DOWN), _t(1, "down", 300000, DOWN), _bias(0, "down", 7000), _bias(1, "down", 9000)]
    lay = ExpertLayout.build("m.gguf", [0, 1], tensors, n_slots=3, ram_slots=0, host=True)
    assert lay.repacked == {(0, "gate")}
    assert lay.in_place[(0, "gate")] == (False,) and lay.shift[(0, "gate")] == 0
    assert lay.in_place[(1, "gate")] == (True,) and lay.kinds["gate"].slot == GATE + 4096   # layer 1 reads in place
    b = lay.kinds["down.bias"]
    assert (b.stride, b.slot, b.expert_dim) == (96, 96, 1) and lay.in_place[(0, "down.bias")] == (False,)
    assert lay.expert_bytes(0) == GATE + DOWN + 96 and lay.ram_stride == GATE + DOWN + 96
    assert lay.slot_offset(1, "down.bias", 2) == b.offset + 2 * 96


def test_a_per_expert_scale_is_a_contiguous_slot_vector():
    """A per-expert scale [n_expert] F32 (llama.cpp's `ffn_*_exps.scale`, reshaped to [1, n, 1] in the graph, which
    needs it contiguous): expert dimension 0, one 4-byte element per slot, no padding."""
    scale = [ExpertTensor(f"blk.{i}.ffn_up_exps.scale", i, "up.scale", (4, 1, 1, 1), (4, 16, 16, 16), 16,
                          ((5000 + i * 64, 4),)) for i in (0, 1)]
    lay = ExpertLayout.build("m.gguf", [0, 1], TENSORS + scale, n_slots=3, ram_slots=0, host=True)
    k = lay.kinds["up.scale"]
    assert (k.expert_dim, k.stride, k.slot) == (0, 4, 4) and lay.slot_offset(1, "up.scale", 2) == k.offset + 8


@pytest.mark.parametrize("tensors,match", [
    (TENSORS[:2] + [_t(1, "gate", 0, GATE), _t(1, "down", 0, DOWN, n_exp=8)], "has 8 experts, others 4"),
    (TENSORS[:2] + [_bias(1, "down", 0)], r"layer 1 has no routed expert tensors"),
    (TENSORS[:2], r"layer 1 has no routed expert tensors"),
    (TENSORS[:2] + [_t(1, "gate", 0, GATE, n_exp=8)], "has 8 experts, others 4"),
])
def test_unexpected_layouts_are_clear_errors(tensors, match):
    with pytest.raises(ValueError, match=match):
        ExpertLayout.build("m.gguf", [0, 1], tensors, 3, 0, host=True)


def test_device_slots_of_mixed_types_are_whole_blocks_of_each():
    """On a GPU, CUDA's quantized MUL_MAT_ID takes nb[2] in blocks of the tensor's type: a down slot serving a
    Q4_K layer (144-byte blocks, 36864-byte experts) and a Q6_K one (210-byte blocks, 53760) is the least
    multiple of lcm(144, 210) = 5040 that holds the larger expert."""
    def down(layer, nbe, block):
        return ExpertTensor(f"blk.{layer}.ffn_down_exps.weight", layer, "down", (256, 128, 4, 1),
                            (block, block, nbe, nbe * 4), nbe * 4, ((layer * 10**6, nbe),))
    lay = ExpertLayout.build("m.gguf", [0, 1], [down(0, 36864, 144), down(1, 53760, 210)], 3, 0, host=False)
    assert lay.kinds["down"].slot == 55440 == 11 * 5040
    uniform = ExpertLayout.build("m.gguf", [0, 1], [down(0, 36864, 144), down(1, 36864, 144)], 3, 0, host=False)
    assert uniform.kinds["down"].slot == 36864     # one type: slots exactly an expert, as before

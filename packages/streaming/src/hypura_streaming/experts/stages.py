"""Staged expert reads (CPU): a layer's missed experts are read kind by kind, each kind waited for just
before the matmul that uses it, so the disk reads the later kinds while the earlier matmuls compute.

llama.cpp's MoE FFN runs one MUL_MAT_ID per kind: `ffn_moe_up`, `ffn_moe_gate` (or one fused
`ffn_moe_gate_up`), then `ffn_moe_down`. Their order in a layer's graph is learned, not assumed
(`KindOrder`): a layer's first pass has every split switched on and waits for all its experts at the
first one; it records the splits after its expert matmuls in the order they come and closes at
`ffn_moe_out-N` (after the down matmul). From then on (`StagedReads`) the split before the expert
matmuls waits only for the first kind's reads; the second kind's are already in flight, the others
follow, and each is waited for at the split after the matmul before its own. A kind whose own matmul's
split arrives while its reads are pending, or `ffn_moe_out` with anything pending, fails the pass
(`StreamError`): never a token computed from half-read experts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..directio import StreamError

# the split after a layer's expert matmul, by node name (`ffn_moe_<name>-N`) -> the kind whose matmul it follows
# ("_scaled": the node after a per-expert scale, where the architecture has one)
SPLIT_AFTER = {"up": "up", "up_scaled": "up", "gate": "gate", "gate_scaled": "gate",
               "gate_up": "gate_up", "gate_up_scaled": "gate_up"}
DOWN = "down"

# The split before a layer's expert matmuls (after the router's ids were consumed, before the first expert matmul):
# the reshape of the MoE FFN's input, `ffn_norm-N (reshaped)` in most architectures. Those that name the input
# otherwise (llama.cpp's src/models/*.cpp), by `general.architecture`; llama4's input is unnamed, but it scales
# the input by the expert weights first (`ffn_moe_weighted-N`). Expert streaming runs only the architectures
# named here or in DEFAULT_SPLIT_ARCHS, each checked bit-identical to resident (tests/streaming/test_expert_archs.py).
SPLIT_BEFORE_EXPERTS = {"gpt-oss": ("attn_post_norm-", " (reshaped)"), "qwen35moe": ("attn_post_norm-", " (reshaped)"),
                        "glm4moe": ("post_attn_norm-", " (reshaped)"), "llama4": ("ffn_moe_weighted-", "")}
DEFAULT_SPLIT_ARCHS = frozenset({"llama", "qwen2moe", "qwen3moe", "deepseek2", "minimax-m2", "ernie4_5-moe", "dots1",
                                 "hunyuan-moe", "granitemoe", "olmoe"})


def base_kind(kind: str) -> str:
    """The matrix a layout kind belongs to: `up.bias` / `up.scale` are read and waited for with `up`."""
    return kind.split(".", 1)[0]


@dataclass
class KindOrder:
    """The order of each layer's expert matmuls, learned from the splits its first full pass showed."""
    kinds: frozenset[str]                                   # the streamed matrices' base kinds
    known: dict[int, tuple[str, ...]] = field(default_factory=dict)
    _seen: dict[int, list[str]] = field(default_factory=dict)

    def saw(self, layer: int, kind: str) -> None:
        """The split after `layer`'s `kind` matmul came (learning passes). A kind that is not streamed is
        ignored (a fused gate_up's `ffn_moe_gate` / `ffn_moe_up` are views of it, not matmuls)."""
        seq = self._seen.setdefault(layer, [])
        if kind in self.kinds and kind not in seq:
            seq.append(kind)

    def closed(self, layer: int) -> None:
        """`ffn_moe_out-N` came: the layer's order is known if every streamed kind showed its split."""
        seq = self._seen.pop(layer, [])
        order = (*seq, DOWN)
        if layer not in self.known and frozenset(order) == self.kinds:
            self.known[layer] = order

    def restart(self, layer: int) -> None:
        """A new pass starts at this layer's experts: forget a half-seen sequence (an aborted pass)."""
        self._seen.pop(layer, None)

    def of(self, layer: int) -> tuple[str, ...] | None:
        return self.known.get(layer)


@dataclass
class Stage:
    kind: str                 # base kind
    futures: list


@dataclass
class StagedReads:
    """One layer's reads still in flight after its first kind was waited for: `stages` in matmul order."""
    layer: int
    order: tuple[str, ...]
    stages: list[Stage]
    slots: list[int]
    ram_slots: list

    def due_after(self, kind: str) -> Stage | None:
        """The stage to wait for at the split after the `kind` matmul. Raises StreamError if `kind`'s own
        reads, or an earlier kind's, are still pending: that matmul ran on half-read experts."""
        if kind not in self.order:
            return None   # a view of a fused matmul's output (gate_up's gate / up), not a matmul
        at = self.order.index(kind)
        for s in self.stages:
            if self.order.index(s.kind) <= at:
                raise StreamError(f"layer {self.layer}: its {s.kind} experts were not waited for before its "
                                  f"{s.kind} matmul")
        if self.stages and self.order.index(self.stages[0].kind) == at + 1:
            return self.stages.pop(0)
        return None

    @property
    def done(self) -> bool:
        return not self.stages

    def all_futures(self) -> list:
        return [f for s in self.stages for f in s.futures]

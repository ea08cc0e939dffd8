"""What to stream: the streaming side's one reading of a `hypura_placement.Plan`.

A `StreamSpec` names the model file, the layers whose weights stream, where each streamed layer comes
from (NVMe or a RAM copy), and how many slots the streamer's pool or expert cache has. It says which
tensors a streamer owns (`is_streamed`): a layer's dense FFN matrices, or its fused routed-expert
tensors. `StreamSpec.from_plan` turns the planner's decision into one, including the expert cache's
slot arithmetic (host slots are a page longer than an expert: `HOST_SLOT_PAD`); tests and tools build
one directly with `StreamSpec.dense` / `StreamSpec.experts`. Streamers read nothing else of the plan.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

from hypura_hardware.storage import ALIGN
from hypura_placement.planner import FILE_EMBEDDING

# Streamed dense FFN weights: the matrices. Their small biases/scales stay resident with the layer (on a
# GPU a bias left in host memory would pull its matmul onto the CPU).
DENSE_FFN = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down|gate_up)\.weight$")
# Routed experts: the fused [*, *, n_expert] tensors of each kind and their per-expert side tensors (biases, scales).
EXPS = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.(\w+)$")
HOST_SLOT_PAD = ALIGN   # bytes a host expert-cache slot has beyond one expert of one kind (experts/layout.py)
STREAM_MODES = ("dense-stream", "expert-stream")


@dataclass(frozen=True)
class StreamSpec:
    """`mode` "dense-stream" | "expert-stream"; `layers` streamed (sorted); `n_slots`: dense slots or
    expert-cache slots; `ram_layers`: dense layers filled from a RAM copy (a subset of `layers`);
    `ram_slots`: experts in the RAM cache behind a device expert cache."""

    path: str
    mode: str
    layers: tuple[int, ...]
    n_slots: int
    ram_layers: frozenset[int] = field(default_factory=frozenset)
    ram_slots: int = 0
    mapped: tuple[str, ...] = ()     # tensors computed from the file's page cache on the CPU (loader.FileMap)

    def __post_init__(self) -> None:
        if self.mode not in STREAM_MODES:
            raise ValueError(f"unknown streaming mode {self.mode!r}")

    @classmethod
    def dense(cls, path, layers: Iterable[int], n_slots: int = 2, ram_layers: Iterable[int] = ()) -> StreamSpec:
        """Dense-FFN streaming of `layers` through `n_slots` slots (at least 1, at most one per layer)."""
        layers = tuple(sorted(set(int(x) for x in layers)))
        if not layers:
            raise ValueError("dense streaming needs at least one streamed layer")
        return cls(str(path), "dense-stream", layers, max(1, min(int(n_slots), len(layers))),
                   ram_layers=frozenset(int(x) for x in ram_layers))

    @classmethod
    def experts(cls, path, layers: Iterable[int], n_slots: int, ram_slots: int = 0) -> StreamSpec:
        """Expert streaming of the routed experts of `layers` through a cache of `n_slots` experts."""
        layers = tuple(sorted(set(int(x) for x in layers)))
        if not layers:
            raise ValueError("expert streaming needs at least one MoE layer to stream")
        return cls(str(path), "expert-stream", layers, int(n_slots), ram_slots=max(0, int(ram_slots)))

    @classmethod
    def from_plan(cls, plan, info, mode: str, path=None) -> StreamSpec:
        """The spec that executes `plan` (for the model `info`, a `ModelInfo`) in `mode`. `path` (default
        `info.path`) names the file in errors. An expert cache's slots: the plan's cached experts on the
        compute tier plus its slot pool (unless dense layers stream through it), in experts of the plan's
        `expert_bytes` (on the CPU: host slots, page-rounded plus `HOST_SLOT_PAD` per expert tensor)."""
        path = info.path if path is None else path
        spec = cls._from_plan(plan, info, mode, path)
        # what a CPU plan leaves in the file, computed from the page cache (the untied token embedding, a row a token)
        mapped = plan.compute_tier == "ram" and plan.tensors.get(FILE_EMBEDDING) == "nvme"
        return replace(spec, mapped=(FILE_EMBEDDING,)) if mapped else spec

    @classmethod
    def _from_plan(cls, plan, info, mode: str, path) -> StreamSpec:
        nvme = plan.streamed_layers.get("nvme", [])
        ram = plan.streamed_layers.get("ram", [])
        if mode == "dense-stream":
            if info.is_moe:
                raise ValueError(f"{path}: a MoE model: use --mode expert-stream (or auto)")
            layers = sorted(set(nvme) | set(ram))
            if not layers:
                raise ValueError(f"{path}: the plan keeps every layer resident within the budgets; dense streaming "
                                 "needs a smaller --ram-budget/--gpu-budget (or use --mode auto)")
            return cls.dense(path, layers, n_slots=max(1, plan.n_slots), ram_layers=ram)
        if mode == "expert-stream":
            if not info.is_moe:
                raise ValueError(f"{path}: not a mixture-of-experts model: use --mode dense-stream (or auto)")
            moe_layers = sorted({t.layer for t in info.tensors if t.role == "routed_expert" and t.layer is not None
                                 and plan.tensors.get(t.name) != plan.compute_tier})
            if not moe_layers:
                raise ValueError(f"{path}: the plan keeps every expert resident within the budgets; expert "
                                 "streaming needs a smaller --ram-budget (or use --mode auto)")
            on_gpu = plan.compute_tier == "gpu"
            ebytes = plan.expert_cache.get("expert_bytes") or 1
            cached = int(plan.expert_cache.get("experts", {}).get(plan.compute_tier, 0))
            # the slot pool is expert cache too, unless dense FFN layers stream beside the experts (theirs)
            pool = cached * ebytes + (0 if cls.dense_beside(plan, info, path) else plan.n_slots * plan.slot_bytes)
            slots = pool // ebytes   # on the CPU the plan's expert_bytes count host slots' page padding
            ram_slots = int(plan.expert_cache.get("experts", {}).get("ram", 0)) if on_gpu else 0
            return cls.experts(path, moe_layers, n_slots=max(slots, info.n_expert_used), ram_slots=ram_slots)
        raise ValueError(f"unknown streaming mode {mode!r}")

    @classmethod
    def dense_beside(cls, plan, info, path=None) -> StreamSpec | None:
        """For a MoE model's plan: the dense-stream spec of the dense FFN layers it streams (leading or
        interleaved dense layers, through the plan's slot pool), None when it keeps them all resident."""
        if not info.is_moe:
            return None
        layers = sorted({t.layer for t in info.tensors if t.role == "dense_ffn" and t.layer is not None
                         and plan.tensors.get(t.name, plan.compute_tier) != plan.compute_tier})
        if not layers:
            return None
        ram = [layer for layer in plan.streamed_layers.get("ram", []) if layer in layers]
        return cls.dense(info.path if path is None else path, layers, n_slots=max(1, plan.n_slots), ram_layers=ram)

    def is_streamed(self, name: str) -> bool:
        """Whether the tensor `name` is one this spec streams (the streamer owns its memory)."""
        m = (DENSE_FFN if self.mode == "dense-stream" else EXPS).match(name)
        return bool(m) and int(m.group(1)) in self.layers

    def host_override(self) -> str:
        """Regex of the streamed weights, for a buffer-type override that keeps them off the GPU."""
        layers = "|".join(str(x) for x in self.layers)
        suffix = "" if self.mode == "dense-stream" else "_exps"
        return rf"^blk\.({layers})\.ffn_(gate|up|down|gate_up){suffix}\.weight$"

"""The plan: a plain data object carrying the placement and its prediction; JSON in and out."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TIERS = ("gpu", "ram", "nvme")
PLAN_MODES = ("full-resident", "expert-streaming", "dense-ffn-streaming")   # what the planner decided


class PlanError(ValueError):
    """No placement fits the budgets; the message says the minimum needed."""


@dataclass
class Plan:
    """Where every tensor lives, the mode, and the predicted decode speed.

    ``tensors`` maps every tensor name to exactly one tier. ``tiers`` are weight bytes per tier;
    ``reserved`` the streaming slot pool and expert caches, the NVMe staging slot and (tied embeddings,
    with a GPU) the input copy of the embedding in RAM;
    ``resident_overhead`` the KV cache and compute buffers on the compute tier. Bytes per token:
    ``ram_bytes_per_token`` (uploaded from RAM), ``nvme_bytes_per_token`` (read from disk) under
    the cache model in ``expert_cache``; ``seconds_per_token`` per resource, its max is the ``bottleneck``.
    """
    model: str
    architecture: str
    hardware: str
    mode: str
    compute_tier: str                      # "gpu", or "ram" without a GPU
    gpu_budget: int
    ram_budget: int
    ctx: int
    resident_overhead: int
    overhead_source: str
    tiers: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, str] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    n_slots: int = 0
    slot_bytes: int = 0
    resident_ffn_layers: list[int] = field(default_factory=list)
    streamed_layers: dict[str, list[int]] = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    expert_cache: dict[str, Any] = field(default_factory=dict)
    touched_bytes_per_token: int = 0
    ram_bytes_per_token: int = 0
    nvme_bytes_per_token: int = 0
    seconds_per_token: dict[str, float] = field(default_factory=dict)
    bottleneck: str = "compute"
    predicted_tps: float = 0.0
    predicted_tps_serial: float = 0.0

    def used(self, tier: str) -> int:
        """Bytes the plan uses on ``tier``: weights, reserved slots, and (compute tier) KV + buffers."""
        extra = self.resident_overhead if tier == self.compute_tier else 0
        return self.tiers.get(tier, 0) + self.reserved.get(tier, 0) + extra

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        names = {f.name for f in fields(cls)}
        plan = cls(**{k: v for k, v in d.items() if k in names})
        plan.expert_cache = dict(plan.expert_cache)
        return plan

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

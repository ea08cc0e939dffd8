"""The planner's cost model: a plan's seconds per token and predicted tok/s (see planner.py's module text).

``t_compute = max(touched / compute_bandwidth, 2 * active_params / flops)``; ``t_disk = nvme bytes / disk rate``
(the random-read rate for experts under ``RANDOM_READ_BELOW``, else the sequential one); ``t_upload`` (GPU only).
Pipelined, ``t = max`` of them, except: one dense slot (serial), dense streaming's idle disk (:func:`_disk_idle`),
and expert streaming on the CPU, where a layer's reads wait for its router (serial: ``t_compute + t_disk``).
"""
from __future__ import annotations

import math

from .hardware_spec import HardwareSpec
from .model_info import ModelInfo
from .plan import Plan

RANDOM_READ_BELOW = 1 << 20     # experts smaller than this are read at the random-read rate


def predict(plan: Plan, m: ModelInfo, hw: HardwareSpec, ebytes: int) -> None:
    """Fill ``plan``'s seconds_per_token, bottleneck and predicted tok/s (``ebytes``: one cached expert's bytes)."""
    t_mem = plan.touched_bytes_per_token / hw.compute_bandwidth
    t_flops = 2 * m.active_params() / hw.compute_flops
    disk_bps = hw.disk_rand_read_bps if 0 < ebytes < RANDOM_READ_BELOW else hw.disk_seq_read_bps
    times = {"compute": max(t_mem, t_flops), "disk": plan.nvme_bytes_per_token / disk_bps}
    if plan.compute_tier == "gpu":
        times["upload"] = (plan.ram_bytes_per_token + plan.nvme_bytes_per_token) / (hw.upload_bps or 12e9)
    serial = sum(times.values())
    if plan.mode == "dense-ffn-streaming" and plan.n_slots == 1:
        t = serial      # one slot: the next layer's read waits until the current layer has computed (no overlap)
    elif plan.mode == "dense-ffn-streaming":
        idle = _disk_idle(plan, hw.compute_bandwidth, disk_bps)
        t = max(times["compute"], times["disk"] + idle, times.get("upload", 0.0))
        times["disk_idle"] = idle
    elif plan.mode == "expert-streaming" and plan.compute_tier == "ram":
        t = serial      # a layer's expert reads start after its router has run: the CPU waits for them (measured)
    else:
        t = max(times.values())
    plan.seconds_per_token = times
    plan.bottleneck = max((k for k in times if k != "disk_idle"), key=lambda k: (times[k], k))
    plan.predicted_tps = 1.0 / t if t > 0 else math.inf
    plan.predicted_tps_serial = 1.0 / serial if serial > 0 else math.inf


def _disk_idle(plan: Plan, compute_bps: float, disk_bps: float) -> float:
    """Seconds a token's disk waits for a free slot (dense streaming through ``n_slots`` slots): each streamed layer's
    slot frees when its FFN has computed, so from then until the next streamed layer's FFN the disk can read at most
    ``n_slots`` layers; compute longer than that (resident layers, the output head) leaves it idle. Sum over the
    gaps of ``max(0, compute of the layer and the gap - n_slots x one layer's read)``."""
    rows = plan.layers
    streamed = [i for i, r in enumerate(rows) if r["ffn_kind"] == "dense_ffn" and r["ffn"] == "nvme"]
    if not streamed or plan.n_slots < 1:
        return 0.0
    layer_b = [r["resident_bytes"] + r["ffn_bytes"] for r in rows]
    head = max(0.0, plan.touched_bytes_per_token - sum(layer_b))
    read = plan.slot_bytes / disk_bps
    idle = 0.0
    for a, b in zip(streamed, streamed[1:] + [streamed[0] + len(rows)]):
        between = sum(layer_b[i % len(rows)] for i in range(a + 1, b)) + rows[b % len(rows)]["resident_bytes"]
        between += head if b >= len(rows) else 0
        idle += max(0.0, (rows[a]["ffn_bytes"] + between) / compute_bps - plan.n_slots * read)
    return idle

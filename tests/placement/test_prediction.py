"""The planner's cost model on the CPU: the measured decode rate as the compute term, expert reads that wait for
the router, and dense streaming's idle disk (which decides where resident layers go and how many slots pay)."""
from __future__ import annotations

import dataclasses

import pytest

from hypura_placement import inspect_model, load_hardware, plan_placement

GiB = 1 << 30
CPU = load_hardware("cpu-2c-24g")


def test_the_cpu_compute_term_is_the_measured_decode_rate(header_only_models):
    m = inspect_model(header_only_models["llama3-70b"])
    measured = plan_placement(m, CPU, ram_budget=20 * GiB)
    bound = plan_placement(m, dataclasses.replace(CPU, cpu_decode_bps=None), ram_budget=20 * GiB)
    touched = m.bytes_per_token()
    assert measured.seconds_per_token["compute"] == pytest.approx(touched / CPU.cpu_decode_bps)
    flops = 2 * m.active_params() / CPU.cpu_flops    # without it, a bandwidth or a flops bound: both optimistic
    assert bound.seconds_per_token["compute"] == pytest.approx(max(touched / CPU.ram_bandwidth, flops))
    assert measured.seconds_per_token["compute"] > bound.seconds_per_token["compute"]


def test_cpu_expert_streaming_is_compute_plus_disk(header_only_models):
    """A layer's missed experts are read after its router has run, and the CPU waits for them."""
    plan = plan_placement(inspect_model(header_only_models["mixtral-8x7b"]), CPU, ram_budget=12 * GiB)
    t = plan.seconds_per_token
    assert plan.mode == "expert-streaming" and t["disk"] > 0
    assert plan.predicted_tps == pytest.approx(1 / (t["compute"] + t["disk"]))


def _gaps(resident: list[int], n_layers: int) -> list[int]:
    return [b - a for a, b in zip(resident, resident[1:] + [resident[0] + n_layers])]


def test_cpu_dense_plans_spread_the_resident_layers(header_only_models):
    m = inspect_model(header_only_models["llama3-70b"])    # 80 layers
    for gib in (12, 20, 28):
        plan = plan_placement(m, CPU, ram_budget=gib * GiB)
        resident = plan.resident_ffn_layers
        assert plan.mode == "dense-ffn-streaming" and 2 <= len(resident) < 80
        even = 80 / len(resident)
        assert max(_gaps(resident, 80)) <= 2 * even and min(_gaps(resident, 80)) >= even / 2
        assert plan.n_slots >= 2


def test_dense_disk_idles_where_compute_outlasts_the_slots(header_only_models):
    """With the compute rate cut 50x, the resident compute between streamed layers outlasts two layers' reads:
    the disk idles, the prediction adds that, and more slots do not win it back at a fixed budget (each is a
    layer more to read), so the plan keeps the fewest. At the real rate the disk never idles."""
    m = inspect_model(header_only_models["llama3-70b"])
    fast = plan_placement(m, CPU, ram_budget=20 * GiB)
    slow_cpu = dataclasses.replace(CPU, cpu_decode_bps=CPU.cpu_decode_bps / 50)
    slow = plan_placement(m, slow_cpu, ram_budget=20 * GiB)
    assert fast.seconds_per_token["disk_idle"] == 0
    t = slow.seconds_per_token
    assert t["disk_idle"] > 0
    assert slow.predicted_tps == pytest.approx(1 / max(t["compute"], t["disk"] + t["disk_idle"]))
    assert slow.n_slots == 2

"""The planner: the issue's "Done when" cases, invariants (every tensor once, budgets, monotonicity,
determinism), the minimum-budget error, CPU-only plans and the per-token byte model."""
from __future__ import annotations

import re

import pytest

from hypura_placement import Plan, PlanError, TIERS, inspect_model, load_hardware, plan_placement

MiB = 1 << 20
MAC = load_hardware("mac-m1max-32g")


@pytest.mark.parametrize("preset,mode", [("qwen2.5-14b", "full-resident"), ("mixtral-8x7b", "expert-streaming"),
                                         ("llama3-70b", "dense-ffn-streaming")])
def test_done_when_modes_on_m1max(header_only_models, preset, mode):
    m = inspect_model(header_only_models[preset])
    plan = plan_placement(m, MAC)
    assert plan.mode == mode
    assert plan.compute_tier == "gpu" and plan.predicted_tps > 0
    if mode == "full-resident":
        assert plan.nvme_bytes_per_token == 0 and plan.tiers["nvme"] == 0 and plan.n_slots == 0
    else:
        assert plan.tiers["nvme"] > 0 and plan.nvme_bytes_per_token > 0 and plan.bottleneck == "disk"


def test_done_when_kimi_k2_on_m1max(header_only_models):
    m = inspect_model(header_only_models["kimi-k2"])
    plan = plan_placement(m, MAC)
    assert plan.mode == "expert-streaming"
    assert plan.tiers["nvme"] > 500e9 and plan.used("gpu") <= plan.gpu_budget
    ebytes = plan.expert_cache["expert_bytes"]
    streamed = plan.streamed_layers["nvme"]
    # uniform routing: 8 of 384 experts per streamed layer, minus what the caches hit
    h_gpu, h_ram = plan.expert_cache["hit_rate"]["gpu"], plan.expert_cache["hit_rate"]["ram"]
    expect = len(streamed) * 8 * ebytes * (1 - h_gpu) * (1 - h_ram)
    assert plan.nvme_bytes_per_token == pytest.approx(expect, rel=1e-6)
    assert plan.predicted_tps == pytest.approx(MAC.disk_seq_read_bps / plan.nvme_bytes_per_token, rel=1e-6)


def _check_invariants(plan: Plan, m, gpu_budget: int, ram_budget: int) -> None:
    assert list(plan.tensors) == [t.name for t in m.tensors]          # every tensor exactly once
    assert set(plan.tensors.values()) <= set(TIERS)
    assert sum(plan.tiers.values()) == sum(t.nbytes for t in m.tensors)
    assert plan.used("gpu") <= gpu_budget and plan.used("ram") <= ram_budget


@pytest.mark.parametrize("preset,hw", [("llama3-70b", "rtx4090-64g"), ("mixtral-8x7b", "rtx4090-64g"),
                                       ("mixtral-8x7b", "cpu-2c-24g"), ("llama3-70b", "cpu-2c-24g"),
                                       ("kimi-k2", "rtx4090-64g"), ("kimi-k2", "cpu-2c-24g")])
def test_invariants_and_monotonic_in_budget(header_only_models, preset, hw):
    m, spec = inspect_model(header_only_models[preset]), load_hardware(hw)
    ram = 24 << 30
    prev = None
    for gib in range(2, 48, 2):
        gpu = (gib << 30) if spec.gpu else 0
        ram_b = ram if spec.gpu else gib << 30
        try:
            plan = plan_placement(m, spec, gpu_budget=gpu, ram_budget=ram_b)
        except PlanError:
            assert prev is None, "a larger budget must not fail where a smaller one planned"
            continue
        _check_invariants(plan, m, gpu, ram_b)
        if prev is not None:
            assert plan.predicted_tps >= prev.predicted_tps
            assert plan.nvme_bytes_per_token <= prev.nvme_bytes_per_token
        prev = plan
    assert prev is not None and prev.predicted_tps > 0


@pytest.mark.parametrize("preset,hw,which", [("llama3-70b", "mac-m1max-32g", "gpu"), ("llama3-70b", "cpu-2c-24g", "ram"),
                                             ("mixtral-8x7b", "rtx4090-64g", "gpu"),
                                             ("mixtral-8x7b", "rtx4090-64g", "ram"),
                                             ("mixtral-8x7b", "cpu-2c-24g", "ram")])
def test_monotonic_across_the_second_slot(header_only_models, preset, hw, which):
    """Fine steps from the minimum budget over the point where a second slot fits (where a planner that
    always takes two slots gives up a resident layer or expert cache for nothing it predicts)."""
    m, spec = inspect_model(header_only_models[preset]), load_hardware(hw)
    fixed = {"gpu": 9 << 30 if which == "ram" else 0, "ram": 4 << 30 if spec.gpu else 0}
    if which == "ram" and spec.gpu:       # find the GPU budget's minimum, then sweep RAM above the staging's
        fixed["gpu"] = 20 << 30
    def plan_at(b):
        kw = {"gpu_budget": b, "ram_budget": fixed["ram"]} if which == "gpu" else \
             {"gpu_budget": fixed["gpu"] if spec.gpu else 0, "ram_budget": b}
        return plan_placement(m, spec, **kw)
    lo, hi = 1 << 20, 256 << 30         # the smallest budget that plans (feasibility is monotone)
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        try:
            plan_at(mid)
            hi = mid
        except PlanError:
            lo = mid
    low = hi
    first = plan_at(low)
    step = max(1, first.slot_bytes // 64)
    tps = [plan_at(low + k * step).predicted_tps for k in range(3 * 64)]
    assert all(b >= a for a, b in zip(tps, tps[1:])), [(k, a, b) for k, (a, b) in enumerate(zip(tps, tps[1:])) if b < a][:3]


def test_monotonic_in_ram_with_gpu(header_only_models):
    m = inspect_model(header_only_models["llama3-70b"])
    spec = load_hardware("rtx4090-64g")
    tps = [plan_placement(m, spec, gpu_budget=20 << 30, ram_budget=g << 30).predicted_tps for g in range(1, 40, 3)]
    assert tps == sorted(tps) and tps[-1] > tps[0]


def test_deterministic_and_json_round_trip(header_only_models):
    m = inspect_model(header_only_models["mixtral-8x7b"])
    a = plan_placement(m, MAC, ctx=8192)
    b = plan_placement(inspect_model(header_only_models["mixtral-8x7b"]), MAC, ctx=8192)
    assert a.to_json() == b.to_json()
    c = Plan.from_json(a.to_json())
    assert c == a and c.to_json() == a.to_json()


def test_budget_too_small_names_the_minimum(synthetic):
    m = inspect_model(synthetic("qwen2.5-14b", layers=4, scale=20, vocab=512))
    cpu = load_hardware("cpu-2c-24g")
    with pytest.raises(PlanError, match="too small") as err:
        plan_placement(m, cpu, ram_budget=1 << 20, ctx=256)
    minimum = int(re.search(r"at least (\d+) bytes", str(err.value)).group(1))
    assert "always-resident part needs" in str(err.value)
    plan = plan_placement(m, cpu, ram_budget=minimum, ctx=256)        # the minimum is exactly enough
    assert plan.mode == "dense-ffn-streaming" and plan.n_slots == 1 and plan.used("ram") <= minimum
    with pytest.raises(PlanError):
        plan_placement(m, cpu, ram_budget=minimum - 1, ctx=256)


def test_cpu_only_and_zero_gpu_budget(header_only_models):
    m = inspect_model(header_only_models["mixtral-8x7b"])
    for plan in (plan_placement(m, load_hardware("cpu-2c-24g"), ram_budget=16 << 30),
                 plan_placement(m, load_hardware("rtx4090-64g"), gpu_budget=0, ram_budget=16 << 30)):
        assert plan.compute_tier == "ram" and plan.tiers["gpu"] == 0 and plan.used("gpu") == 0
        assert set(plan.tensors.values()) == {"ram", "nvme"} and "upload" not in plan.seconds_per_token
        assert plan.mode == "expert-streaming" and plan.used("ram") <= 16 << 30


def test_dense_bytes_per_token_counts_whole_streamed_layers(header_only_models):
    m = inspect_model(header_only_models["llama3-70b"])
    plan = plan_placement(m, load_hardware("rtx4090-64g"), gpu_budget=20 << 30, ram_budget=16 << 30)
    ffn = m.layer_bytes("dense_ffn")
    assert plan.nvme_bytes_per_token == sum(ffn[i] for i in plan.streamed_layers["nvme"])
    assert plan.ram_bytes_per_token == sum(ffn[i] for i in plan.streamed_layers["ram"])
    assert plan.resident_ffn_layers == list(range(len(plan.resident_ffn_layers)))  # the first K layers
    for name, tier in plan.tensors.items():
        if ".attn_" in name or "norm" in name:
            assert tier == "gpu"


def test_measured_overhead_is_used(header_only_models):
    m = inspect_model(header_only_models["llama3-70b"])
    spec = load_hardware("rtx4090-64g")
    small = plan_placement(m, spec, gpu_budget=20 << 30, ram_budget=8 << 30, resident_overhead=256 * MiB)
    big = plan_placement(m, spec, gpu_budget=20 << 30, ram_budget=8 << 30, resident_overhead=6 << 30)
    assert small.resident_overhead == 256 * MiB and "dry run" in small.overhead_source
    assert len(big.resident_ffn_layers) < len(small.resident_ffn_layers)
    assert big.predicted_tps < small.predicted_tps


def test_unknown_architecture_is_planned(tmp_path, caplog):
    import dataclasses

    from hypura_synthetic import get_preset, write_synthetic

    shape = dataclasses.replace(get_preset("llama3-70b"), arch="mystery", preset="mystery")
    p = write_synthetic(tmp_path / "m.gguf", shape, layers=4, scale=16, vocab=512)
    m = inspect_model(p)
    assert "not in the role table" in caplog.text
    plan = plan_placement(m, load_hardware("cpu-2c-24g"), ram_budget=m.file_size // 2, resident_overhead=0)
    assert plan.mode == "dense-ffn-streaming" and plan.streamed_layers["nvme"]


def test_routing_statistics_set_the_expert_cache_hit_rate(header_only_models):
    """With earlier runs' routing, a frequency-aware cache of c experts hits the share of selections of the
    c most chosen experts (add-one smoothed); equal counts give the uniform c / S; more skew, fewer bytes."""
    m = inspect_model(header_only_models["mixtral-8x7b"])
    cpu = load_hardware("cpu-2c-24g")
    uniform = plan_placement(m, cpu, ram_budget=8 << 30)
    c = uniform.expert_cache["experts"]["ram"]
    layers = uniform.streamed_layers["nvme"]
    s_all = 8 * len(layers)
    assert 0 < c < s_all and uniform.expert_cache["hit_rate"]["ram"] == pytest.approx(c / s_all)
    assert uniform.expert_cache["model"].startswith("uniform")

    equal = plan_placement(m, cpu, ram_budget=8 << 30, routing={L: {e: 5 for e in range(8)} for L in layers})
    assert equal.expert_cache["hit_rate"]["ram"] == pytest.approx(c / s_all)
    assert equal.nvme_bytes_per_token == uniform.nvme_bytes_per_token

    # every layer chooses experts 0 and 1 (9 times each) far more than the rest (once): hand-computed share
    skew = {L: {0: 9, 1: 9, **{e: 1 for e in range(2, 8)}} for L in layers}
    plan = plan_placement(m, cpu, ram_budget=8 << 30, routing=skew)
    ranked = sorted([10, 10] * len(layers) + [2] * 6 * len(layers), reverse=True)
    assert plan.expert_cache["experts"]["ram"] == c
    assert plan.expert_cache["hit_rate"]["ram"] == pytest.approx(sum(ranked[:c]) / sum(ranked))
    assert plan.expert_cache["model"].startswith("routing statistics")
    assert plan.nvme_bytes_per_token < uniform.nvme_bytes_per_token
    assert plan.predicted_tps > uniform.predicted_tps
    prev = 0.0
    for gib in range(4, 40, 2):      # still monotone in the budget
        tps = plan_placement(m, cpu, ram_budget=gib << 30, routing=skew).predicted_tps
        assert tps >= prev - 1e-12
        prev = tps


def test_routing_statistics_with_a_gpu_and_a_ram_cache(header_only_models):
    m = inspect_model(header_only_models["mixtral-8x7b"])
    gpu = load_hardware("rtx4090-64g")
    uniform = plan_placement(m, gpu, gpu_budget=8 << 30, ram_budget=8 << 30)
    layers = uniform.streamed_layers["nvme"] + uniform.streamed_layers.get("ram", [])
    skew = {L: {0: 9, 1: 9, **{e: 1 for e in range(2, 8)}} for L in layers}
    plan = plan_placement(m, gpu, gpu_budget=8 << 30, ram_budget=8 << 30, routing=skew)
    _check_invariants(plan, m, 8 << 30, 8 << 30)
    hits, base = plan.expert_cache["hit_rate"], uniform.expert_cache["hit_rate"]
    assert hits["gpu"] > base["gpu"] and 0 <= hits["ram"] <= 1
    assert plan.nvme_bytes_per_token < uniform.nvme_bytes_per_token

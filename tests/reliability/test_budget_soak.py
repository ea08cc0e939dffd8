"""Budgets held under pressure: `hypura serve` in a streaming mode with a RAM budget far below the model,
soaked by concurrent streaming clients (some hanging up). The model worker's peak RSS — the kernel's
high-water mark (VmHWM) of the worker process, which catches spikes between samples — must stay within
the RAM budget plus the process's fixed cost, and nothing may leak (tools/soak.py's checks).

The fixed cost is what a worker costs before any weight: Python, numpy, the server modules, llama.cpp's
libraries and thread stacks. It is measured here (a worker serving a 2 MB model) rather than assumed, and
the bound is budget + that baseline + 32 MiB of allocator slack."""
from __future__ import annotations

import json

import pytest

from soak import ServeProcess, check, request, settle, soak

MiB = 1 << 20
SLACK = 32 * MiB


def _report(report: dict) -> None:
    print(json.dumps({k: v for k, v in report.items() if k not in ("before", "after")}))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hypura_synthetic import write_synthetic

    d = tmp_path_factory.mktemp("budget-models")
    # Dense: 8 layers of llama3-70b at 1/4 width, Q4_0 (242 MB; FFN is 82% of it).
    write_synthetic(d / "dense.gguf", "llama3-70b", layers=8, scale=4, vocab=512, qtype="Q4_0")
    # MoE: 4 layers of mixtral-8x7b at 1/4 width, Q4_0 (205 MB; 32 experts of 6.2 MB).
    write_synthetic(d / "moe.gguf", "mixtral-8x7b", layers=4, scale=4, vocab=512, qtype="Q4_0")
    return d


@pytest.fixture(scope="module")
def baseline_kb(tiny_models, tmp_path_factory):
    """Peak RSS of a worker serving a 2 MB model: the fixed cost of a worker process."""
    d = tmp_path_factory.mktemp("baseline")
    (d / "tiny.gguf").symlink_to(tiny_models["dense"])
    with ServeProcess(d, "--mode", "resident", "--ctx", "512", "--threads", "1") as s:
        m = settle(s.url, s.pid, "tiny")
    assert m["settle_status"] == 200 and m["workers"] == 1
    return m["worker_peak_rss_kb"]


# (seconds, clients, share of streams hung up, answers at least, allowed RSS growth before → after).
# The default suite runs the few-second one: the same budget, leak and RSS checks, fewer answers.
QUICK = (4, 4, 0.25, 1, 32 << 10)
SHORT = (20, 4, 0.25, 4, 32 << 10)
TEN_MINUTES = (600, 8, 0.2, 20, 64 << 10)


@pytest.mark.parametrize("profile", [pytest.param(QUICK, id="4s"),
                                     pytest.param(SHORT, id="20s", marks=pytest.mark.slow),
                                     pytest.param(TEN_MINUTES, id="600s", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name,mode,share", [("dense", "dense-stream", 0.6), ("moe", "expert-stream", 0.5)])
def test_streaming_soak_holds_the_ram_budget(models, baseline_kb, name, mode, share, profile):
    seconds, clients, hang_up, min_ok, rss_slack_kb = profile
    size = (models / f"{name}.gguf").stat().st_size
    budget = int(size * share)
    with ServeProcess(models, "--mode", mode, "--ctx", "512", "--threads", "2", "--ram-budget", str(budget)) as s:
        report = soak(s.url, s.pid, name, duration_s=seconds, clients=clients, disconnect_share=hang_up,
                      num_predict=8)
        _, body = request(s.url, "GET", "/api/ps")
    _report(report)
    (ps,) = json.loads(body)["models"]            # /api/ps tells where the weights are, as planned
    tiers = ps["hypura"]["tier_bytes"]
    assert ps["hypura"]["mode"] == mode and ps["size_vram"] == 0     # no GPU here
    assert tiers["gpu"] == 0 and tiers["nvme"] > 0 and 0 < tiers["ram"] < budget
    bound_kb = (budget + SLACK) // 1024 + baseline_kb
    print(f"{name}: model {size / MiB:.0f} MiB, budget {budget / MiB:.0f} MiB, worker baseline "
          f"{baseline_kb / 1024:.0f} MiB, worker peak {report['worker_rss_hwm_kb'] / 1024:.0f} MiB "
          f"(bound {bound_kb / 1024:.0f} MiB), {report['requests']} requests")
    assert report["ok"] >= min_ok and report["rss_samples"] > 10
    assert not check(report, rss_slack_kb=rss_slack_kb), check(report)
    assert 0 < report["worker_rss_hwm_kb"] <= bound_kb, (report["worker_rss_hwm_kb"], bound_kb)
    # The bound would not hold if the worker held the model: it is below baseline + the model's size.
    assert bound_kb < baseline_kb + size // 1024

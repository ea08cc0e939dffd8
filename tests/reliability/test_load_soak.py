"""Load and soak against a real `hypura serve` (tools/soak.py drives both): every request gets its answer
or an error, hung-up streams free their model, and nothing leaks — server RSS, threads, file descriptors,
worker processes and their RSS, loaded-model slots — measured after warm-up and again after the run."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from soak import ServeProcess, check, drive, request, settle, soak


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from hypura_synthetic import get_preset, write_synthetic

    models = tmp_path_factory.mktemp("soak-models")
    write_synthetic(models / "tiny.gguf", replace(get_preset("llama3-70b").scaled(layers=2, scale=32, vocab=512),
                                                  ctx=512))
    with ServeProcess(models, "--mode", "resident", "--ctx", "512", "--threads", "1") as s:
        yield s


def _report(report: dict) -> None:
    print(json.dumps({k: v for k, v in report.items() if k not in ("before", "after")}))
    print("before", report["before"], "\nafter ", report["after"])


def test_bounded_load_many_streams_some_hang_up(srv):
    """48 concurrent clients on one model (3x waitress' threads), 5 requests each, a third of the streams
    hanging up after their first chunk."""
    before = settle(srv.url, srv.pid, "tiny")
    tally = drive(srv.url, "tiny", duration_s=0.0, clients=48, disconnect_share=0.33, num_predict=64, count=5)
    n = tally.ok + tally.errors + tally.disconnects + len(tally.failures)
    print(f"load: {n} requests, {tally.ok} answered, {tally.disconnects} hung up, {tally.errors} errors; latency "
          f"p50 {sorted(tally.latency)[len(tally.latency) // 2]:.3f} s, max {max(tally.latency):.3f} s")
    assert n == 240 and not tally.failures and not tally.errors, tally.failures[:5]
    assert tally.ok > 100 and tally.disconnects > 20, (tally.ok, tally.disconnects)
    after = settle(srv.url, srv.pid, "tiny")
    assert after["settle_status"] == 200 and after["loaded"] == ["tiny:latest"] and after["workers"] == 1
    assert after["server"]["threads"] == before["server"]["threads"] and after["server"]["fds"] <= before["server"]["fds"]


# (seconds, requests more than, answers more than): the default suite's few seconds check the same leaks and
# failures as the 40 s soak behind `slow`, with the counts scaled to the time.
@pytest.mark.parametrize("profile", [pytest.param((4, 10, 5), id="4s"),
                                     pytest.param((40, 100, 50), id="40s", marks=pytest.mark.slow)])
def test_short_soak(srv, profile):
    seconds, min_requests, min_ok = profile
    report = soak(srv.url, srv.pid, "tiny", duration_s=seconds, clients=8, disconnect_share=0.2, num_predict=32)
    _report(report)
    assert report["requests"] > min_requests and report["ok"] > min_ok
    assert not check(report, rss_slack_kb=32 << 10), check(report)


@pytest.mark.slow
def test_soak_10_minutes_real_model(tmp_path):
    """The embedded gemma3:270m, 8 clients, 10 minutes."""
    with ServeProcess(tmp_path, "--mode", "resident", "--ctx", "1024", "--threads", "2") as s:
        report = soak(s.url, s.pid, "gemma3:270m", duration_s=600, clients=8, disconnect_share=0.2, num_predict=24)
    _report(report)
    assert report["requests"] > 200
    assert not check(report), check(report)

"""Hostile requests mixed with normal streaming clients (tools/soak.py's), against a real `hypura serve`:
every normal request is served, every hostile one is a 4xx (or served), `/api/version` stays fast, and
afterwards no model is held, and the server's threads, file descriptors and RSS (and its workers') are
back to their baseline. The 10-minute run is `slow`; HYPURA_HOSTILE_SOAK_S shortens it."""
from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import replace

import pytest

from hostile_support import VERSION_MAX_S, raw_request
from soak import ServeProcess, _pct, check, drive, settle

MODEL = "tiny"
HOSTILE = [
    ("/api/chat", {"model": "tooly", "messages": [{"role": "user", "content": "hi"}], "tools": [{"function": "x"}]}),
    ("/v1/chat/completions", {"model": "tooly", "messages": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "function", "function": {"name": ["x"]}}]}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": "nan"}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": 1e308}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"top_k": 2 ** 64}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"repeat_last_n": 2 ** 31}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "format": {"enum": 5}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "format": {"$defs": {"A": {"$ref": "#/$defs/A"}},
                                                                   "$ref": "#/$defs/A"}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "format": {"enum": [str(i) for i in range(100000)]}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "template": "{% if %}"}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "template": "{{ 'a' * 200000000 }}"}),
    ("/api/generate", {"model": MODEL, "prompt": "word " * 2000}),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "a"}] * 20000}),
    ("/api/embed", {"model": MODEL, "input": ["a"] * 3000}),
    ("/v1/embeddings", {"model": MODEL, "input": "hi", "dimensions": -1}),
    ("/api/create", {"model": "x", "from": "/etc/shadow"}),
    ("/api/create", {"model": "x", "modelfile": "FROM tiny\n" + "\n" * 80000 + "!"}),
    ("/api/create", {"model": "x", "from": MODEL, "parameters": {"top_k": 2 ** 64}}),
]


class HostileClient(threading.Thread):
    """Sends the hostile requests round-robin (and one with an evil Host) until stopped; records failures."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rng = url, random.Random(seed)
        self.sent, self.failures, self.version_worst = 0, [], 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            path, body = self.rng.choice(HOSTILE)
            try:
                status, out = raw_request(self.url, "POST", path, body, timeout=30)
                if not (status == 200 or 400 <= status < 500 and "error" in json.loads(out)):
                    self.failures.append((path, status, out[:200]))   # 400 or served, never a 5xx
                status, _ = raw_request(self.url, "GET", "/api/version", headers={"Host": "evil.example"}, timeout=5)
                if status != 403:
                    self.failures.append(("evil host", status))
                t0 = time.perf_counter()
                status, _ = raw_request(self.url, "GET", "/api/version", timeout=5)
                self.version_worst = max(self.version_worst, time.perf_counter() - t0)
            except (OSError, ValueError) as exc:
                self.failures.append((path, repr(exc)))
            self.sent += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def run_hostile_soak(tmp_path, duration_s: float, clients: int = 6, hostile_clients: int = 2) -> dict:
    from hypura_synthetic import get_preset, write_synthetic

    shape = replace(get_preset("llama3-70b").scaled(layers=2, scale=32, vocab=512), ctx=512)
    write_synthetic(tmp_path / f"{MODEL}.gguf", shape)
    with ServeProcess(tmp_path, "--mode", "resident", "--ctx", "512", "--threads", "1") as srv:
        status, out = raw_request(srv.url, "POST", "/api/create", {
            "model": "tooly", "from": MODEL, "stream": False, "template": "{% if tools %}{% endif %}{{ messages }}"})
        assert status == 200, out
        before = settle(srv.url, srv.pid, MODEL)
        bad = [HostileClient(srv.url, i) for i in range(hostile_clients)]
        for h in bad:
            h.start()
        t0 = time.perf_counter()
        try:
            tally = drive(srv.url, MODEL, duration_s, clients, disconnect_share=0.2, num_predict=16)
        finally:
            for h in bad:
                h.stop()
        wall = time.perf_counter() - t0
        time.sleep(1.0)
        after = settle(srv.url, srv.pid, MODEL)
    n = tally.ok + tally.errors + tally.disconnects + len(tally.failures)
    return {"duration_s": round(wall, 1), "requests": n, "ok": tally.ok, "errors": tally.errors,
            "disconnects": tally.disconnects, "failures": len(tally.failures), "failure_samples": tally.failures[:5],
            "latency_p50_s": _pct(tally.latency, 0.5), "latency_p99_s": _pct(tally.latency, 0.99),
            "hostile_sent": sum(h.sent for h in bad), "hostile_failures": [f for h in bad for f in h.failures][:10],
            "version_worst_s": round(max(h.version_worst for h in bad), 3), "before": before, "after": after}


def _assert_clean(report: dict) -> None:
    print(json.dumps({k: v for k, v in report.items() if k not in ("before", "after")}, default=repr))
    print("before", report["before"], "\nafter ", report["after"])
    assert report["hostile_sent"] > 10 and not report["hostile_failures"], report["hostile_failures"]
    assert report["ok"] > 20 and report["errors"] == 0, report
    assert report["version_worst_s"] < VERSION_MAX_S
    assert not check(report, rss_slack_kb=48 << 10), check(report)


def test_hostile_soak_short(tmp_path):
    _assert_clean(run_hostile_soak(tmp_path, duration_s=4))   # the default suite keeps soaks to a few seconds


@pytest.mark.slow
def test_hostile_soak_10_minutes(tmp_path):
    _assert_clean(run_hostile_soak(tmp_path, duration_s=float(os.environ.get("HYPURA_HOSTILE_SOAK_S", 600))))

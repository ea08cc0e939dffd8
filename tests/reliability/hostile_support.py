"""The oracle for hostile requests against a live `hypura serve`: the request is answered (200, or a 4xx
with a JSON error — never a 5xx) within its deadline, `/api/version` keeps answering quickly meanwhile,
and afterwards the model still serves (no leaked lease, no wedged worker)."""
from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from soak import request

VERSION_MAX_S = 1.0      # /api/version must answer within this while a hostile request runs


class VersionProbe(threading.Thread):
    """GET /api/version every 50 ms; `worst` is the slowest answer (a failure counts as infinitely slow)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.worst, self.count = url, 0.0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                status, _ = request(self.url, "GET", "/api/version", timeout=5)
                took = time.perf_counter() - t0 if status == 200 else float("inf")
            except OSError:
                took = float("inf")
            self.worst = max(self.worst, took)
            self.count += 1
            self._halt.wait(0.05)

    def stop(self) -> float:
        self._halt.set()
        self.join(10)
        return self.worst


def raw_request(url: str, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def served(url: str, model: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """A short normal generation (the model is not held by anything left behind)."""
    return request(url, "POST", "/api/generate", {"model": model, "prompt": "hi", "stream": False,
                                                   "options": {"num_predict": 2, "temperature": 0}}, timeout=timeout)


def hostile(srv: Any, method: str, path: str, body: Any = None, raw: bytes | None = None, deadline: float = 30.0,
            model: str | None = None, allowed: tuple[int, ...] | None = None) -> tuple[int, bytes]:
    """Send one hostile request under the oracle; returns (status, body). `allowed`: the statuses that
    pass (default: 200 or any 4xx); with `model`, the model must serve afterwards."""
    probe = VersionProbe(srv.url)
    probe.start()
    t0 = time.perf_counter()
    try:
        status, out = raw_request(srv.url, method, path, body, raw, timeout=deadline)
    finally:
        worst = probe.stop()
    took = time.perf_counter() - t0
    what = f"{method} {path} {(raw or json.dumps(body).encode())[:160]!r}"
    ok = status in allowed if allowed else status == 200 or 400 <= status < 500
    assert ok, (what, status, out[:300])
    if status >= 400:
        assert json.loads(out)["error"], (what, out[:300])
    assert took < deadline, (what, took)
    assert worst < VERSION_MAX_S, (what, f"/api/version took {worst:.2f} s during the request")
    assert srv.alive(), what
    if model:
        st, answer = served(srv.url, model)
        assert st == 200, (what, "the model no longer serves", st, answer[:300])
    return status, out


def error_of(out: bytes) -> str:
    err = json.loads(out)["error"]
    return err["message"] if isinstance(err, dict) else err

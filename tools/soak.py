#!/usr/bin/env python3
"""Load and soak driver for `hypura serve`: many concurrent streaming clients against one model.

Each client loops: POST /api/generate (streaming NDJSON, or now and then /api/chat non-streaming), reads the
answer; a share of them hang up after the first chunk. Every request must end in its answer (a final
``done`` chunk), an error (a JSON ``{"error"}``), or the hang-up we chose — anything else (a reset, a
malformed body, a timeout) is a failure. The server's RSS, threads and file descriptors (its own and its
model workers') and the model slots (``/api/ps``, the queue) are measured before and after, once the server
settled; p50/p99 latency and time to first chunk are reported.

  tools/soak.py --duration 600 --clients 8                 # starts its own server on the default model
  tools/soak.py --url http://127.0.0.1:11434 --model gemma3:270m --duration 60
Prints one JSON report; exit status 1 if any request failed or anything leaked.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "gemma3:270m"


# -- the server under test ------------------------------------------------------------------------
class ServeProcess:
    """`hypura serve` in a subprocess on a free loopback port; its stderr is kept (last lines)."""

    def __init__(self, models_dir: str | os.PathLike, *args: str, env: dict[str, str] | None = None,
                 host: str | None = "127.0.0.1", timeout: float = 60.0) -> None:
        """`host` None: no --host flag (the configured default)."""
        cmd = [sys.executable, "-m", "hypura.main", "serve", *(["--host", host] if host else []), "--port", "0",
               "--models", str(models_dir), *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=full_env, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError("hypura serve did not start:\n" + "\n".join(self.lines[-20:]))
        self.host = "127.0.0.1" if not host or host in ("0.0.0.0", "::") else host

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            m = re.search(r"serving the Ollama API on http://([^\s]*):(\d+)", line)
            if m:
                self.bound, self.port = m.group(1), int(m.group(2))
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)   # SIGINT: waitress stops, models unload, workers exit
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def request(url: str, method: str, path: str, body: Any = None, raw: bytes | None = None,
            timeout: float = 120.0) -> tuple[int, bytes]:
    """One HTTP exchange: (status, body)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- measurements ---------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _status(pid: int) -> dict[str, int]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            vals[k] = int(v.split()[0])
    return {"rss_kb": vals.get("VmRSS", 0), "hwm_kb": vals.get("VmHWM", 0), "threads": vals.get("Threads", 0),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def process_metrics(pid: int) -> dict[str, Any]:
    """RSS, threads and fds of the server and of each of its child processes (the model workers)."""
    workers = {c: _status(c) for c in _children(pid)}
    return {"server": _status(pid), "workers": len(workers),
            "worker_rss_kb": sum(w["rss_kb"] for w in workers.values()),
            "worker_peak_rss_kb": max((w["hwm_kb"] for w in workers.values()), default=0),
            "worker_threads": sum(w["threads"] for w in workers.values()),
            "worker_fds": sum(w["fds"] for w in workers.values())}


def settle(url: str, pid: int, model: str, quiet_s: float = 1.0) -> dict[str, Any]:
    """Wait until no request is in flight (a short request completes) and measure."""
    status, _ = request(url, "POST", "/api/generate",
                        {"model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 1, "temperature": 0}})
    time.sleep(quiet_s)
    out = process_metrics(pid)
    out["settle_status"] = status
    _, ps = request(url, "GET", "/api/ps")
    out["loaded"] = [m["name"] for m in json.loads(ps)["models"]]
    return out


# -- the clients ----------------------------------------------------------------------------------
@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    disconnects: int = 0
    failures: list[str] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, latency: float | None = None, first: float | None = None, why: str = "") -> None:
        with self.lock:
            if kind == "ok":
                self.ok += 1
            elif kind == "error":
                self.errors += 1
            elif kind == "disconnect":
                self.disconnects += 1
            else:
                self.failures.append(why[:300])
            if latency is not None:
                self.latency.append(latency)
            if first is not None:
                self.first_chunk.append(first)


PROMPTS = ["Hi", "Write a haiku about disks.", "Count to five.", "What is 2+2?", "Name a colour.",
           "Explain NVMe in one sentence.", "Say hello in French."]


def one_request(url: str, model: str, rng: random.Random, tally: Tally, disconnect_share: float,
                num_predict: int, timeout: float) -> None:
    u = urlsplit(url)
    prompt = rng.choice(PROMPTS)
    opts = {"num_predict": rng.randint(1, num_predict), "temperature": rng.choice([0, 0.7]), "seed": rng.randint(0, 99)}
    stream = rng.random() > 0.15
    hang_up = stream and rng.random() < disconnect_share
    if stream or rng.random() < 0.5:
        path, body = "/api/generate", {"model": model, "prompt": prompt, "stream": stream, "options": opts}
    else:
        path, body = "/api/chat", {"model": model, "stream": False, "options": opts,
                                    "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            data = json.loads(resp.read() or b"{}")
            tally.add("error" if "error" in data else "failure", why=f"status {resp.status}: {data}")
            return
        if not stream:
            data = json.loads(resp.read())
            done = data.get("done") is True
            tally.add("ok" if done else "failure", time.perf_counter() - t0, why=f"no done: {data}")
            return
        first = None
        while True:
            line = resp.readline()
            if not line:
                tally.add("failure", why="stream ended without a done chunk")
                return
            chunk = json.loads(line)
            if first is None:
                first = time.perf_counter() - t0
                if hang_up:
                    conn.close()
                    tally.add("disconnect", first=first)
                    return
            if "error" in chunk:
                tally.add("error", first=first)
                return
            if chunk.get("done"):
                tally.add("ok", time.perf_counter() - t0, first)
                return
    except Exception as exc:  # noqa: BLE001 - every other ending is a failure to report
        tally.add("failure", why=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def drive(url: str, model: str, duration_s: float, clients: int, disconnect_share: float = 0.2,
          num_predict: int = 16, seed: int = 0, timeout: float = 300.0, count: int | None = None) -> Tally:
    """`clients` threads sending requests back to back for `duration_s` seconds (or `count` requests each)."""
    tally = Tally()
    stop = time.monotonic() + duration_s
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        start.wait()          # all clients at once: the queue is really `clients` deep
        sent = 0
        while (count is not None and sent < count) or (count is None and time.monotonic() < stop):
            one_request(url, model, rng, tally, disconnect_share, num_predict, timeout)
            sent += 1

    threads = [threading.Thread(target=client, args=(i,), name=f"soak-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 4)


class RssSampler(threading.Thread):
    """Samples the model workers' RSS every `period_s` while a soak runs: the largest sum seen, and each
    worker's own high-water mark (VmHWM: the kernel's peak, which catches spikes between samples)."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.period_s = pid, period_s
        self.peak_rss_kb = self.peak_hwm_kb = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            try:
                m = process_metrics(self.pid)
            except OSError:  # a worker exited between listing and reading
                continue
            self.samples += 1
            self.peak_rss_kb = max(self.peak_rss_kb, m["worker_rss_kb"])
            self.peak_hwm_kb = max(self.peak_hwm_kb, m["worker_peak_rss_kb"])

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return {"worker_rss_peak_sampled_kb": self.peak_rss_kb, "worker_rss_hwm_kb": self.peak_hwm_kb,
                "rss_samples": self.samples}


def soak(url: str, pid: int, model: str, duration_s: float, clients: int, disconnect_share: float = 0.2,
         num_predict: int = 16, seed: int = 0) -> dict[str, Any]:
    """Warm up, measure, drive, settle, measure again. Returns the report (see `check`)."""
    before = settle(url, pid, model)
    sampler = RssSampler(pid)
    sampler.start()
    t0 = time.perf_counter()
    try:
        tally = drive(url, model, duration_s, clients, disconnect_share, num_predict, seed)
    finally:
        memory = sampler.stop()
    wall = time.perf_counter() - t0
    after = settle(url, pid, model)
    n = tally.ok + tally.errors + tally.disconnects + len(tally.failures)
    return {"model": model, "clients": clients, "duration_s": round(wall, 1), "requests": n, "ok": tally.ok,
            "errors": tally.errors, "disconnects": tally.disconnects, "failures": len(tally.failures),
            "failure_samples": tally.failures[:5], "requests_per_s": round(n / wall, 2),
            "latency_p50_s": _pct(tally.latency, 0.5), "latency_p99_s": _pct(tally.latency, 0.99),
            "first_chunk_p50_s": _pct(tally.first_chunk, 0.5), "first_chunk_p99_s": _pct(tally.first_chunk, 0.99),
            **memory, "before": before, "after": after}


def check(report: dict[str, Any], rss_slack_kb: int = 64 << 10) -> list[str]:
    """What leaked or failed (empty: clean). RSS may grow by `rss_slack_kb` (allocator warm-up)."""
    b, a = report["before"], report["after"]
    problems = []
    if report["failures"]:
        problems.append(f"{report['failures']} requests failed: {report['failure_samples']}")
    if a["settle_status"] != 200:
        problems.append(f"a request after the soak got status {a['settle_status']}")
    if a["server"]["threads"] > b["server"]["threads"]:
        problems.append(f"server threads {b['server']['threads']} -> {a['server']['threads']}")
    if a["server"]["fds"] > b["server"]["fds"]:
        problems.append(f"server fds {b['server']['fds']} -> {a['server']['fds']}")
    if a["workers"] != b["workers"] or a["loaded"] != b["loaded"]:
        problems.append(f"workers {b['workers']} -> {a['workers']}, loaded {b['loaded']} -> {a['loaded']}")
    if a["server"]["rss_kb"] - b["server"]["rss_kb"] > rss_slack_kb:
        problems.append(f"server RSS {b['server']['rss_kb']} -> {a['server']['rss_kb']} kB")
    if a["worker_rss_kb"] - b["worker_rss_kb"] > rss_slack_kb:
        problems.append(f"worker RSS {b['worker_rss_kb']} -> {a['worker_rss_kb']} kB")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server (default: start `hypura serve` on a free port)")
    p.add_argument("--pid", type=int, help="the server's pid (with --url; needed for the leak measurements)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--duration", type=float, default=600.0, help="seconds [600]")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients [8]")
    p.add_argument("--disconnect", type=float, default=0.2, help="share of streams hung up after one chunk [0.2]")
    p.add_argument("--num-predict", type=int, default=16, help="at most this many tokens per request [16]")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.url:
        if not a.pid:
            p.error("--url needs --pid")
        report = soak(a.url, a.pid, a.model, a.duration, a.clients, a.disconnect, a.num_predict, a.seed)
    else:
        with tempfile.TemporaryDirectory() as models, \
                ServeProcess(models, "--mode", "resident", "--ctx", "512", "--threads", "2") as srv:
            report = soak(srv.url, srv.pid, a.model, a.duration, a.clients, a.disconnect, a.num_predict, a.seed)
    report["problems"] = check(report)
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

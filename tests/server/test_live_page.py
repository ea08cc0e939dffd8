"""The live page in a real headless Chromium (Debian's ``chromium``), during a real streaming generation:
``GET /`` in a browser is the page; it shows the model, its plan as tiers (the FFN layers that stream from
NVMe among them) and live figures; its screenshot is not blank. API clients still get ``Ollama is running``."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
from server_support import Server

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RAM_BUDGET = 755 << 20     # Gemma 3 270M at ctx 512: all resident needs ~800 MB; this streams 4 FFN layers


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory: pytest.TempPathFactory, default_model: Path):
    from hypura_server import Settings, create_app, make_server

    settings = Settings(models_dir=tmp_path_factory.mktemp("live-models"), ollama_dir=tmp_path_factory.mktemp("o"),
                        mode="dense-stream", ctx=512, ram_budget=RAM_BUDGET, keep_alive=300.0, host="127.0.0.1")
    app = create_app(settings)
    srv = make_server(app, "127.0.0.1", 0, threads=8)
    threading.Thread(target=srv.run, daemon=True).start()
    yield Server("127.0.0.1", srv.effective_port, settings.models_dir, settings.ollama_dir, app)
    srv.close()
    app.extensions["hypura"].manager.close()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG: the stdlib's zlib and the five filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride, rows, prev = width * bpp, [], bytes(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2,
                    4: a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c}[f]
            line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("HYPURA_NO_BROWSER") == "1":
            pytest.skip("HYPURA_NO_BROWSER=1 and no chromium here")
        pytest.fail("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--no-first-run", "--user-data-dir=" + args[0], *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


def live(server: Server) -> dict:
    status, _, body = server.request("GET", "/api/hypura/live")
    assert status == 200
    return json.loads(body)


def test_api_clients_still_get_ollama_is_running(streaming_server):
    for accept in (None, "*/*", "application/json", "text/plain"):
        status, headers, body = streaming_server.request("GET", "/", headers={"Accept": accept} if accept else {})
        assert (status, body) == (200, b"Ollama is running")
    status, headers, body = streaming_server.request(
        "GET", "/", headers={"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<script>" in body and b"<svg" not in body          # the picture comes from /api/hypura/tiers.svg
    assert b"http://" not in body and b"https://" not in body   # nothing from elsewhere: it works offline
    assert b"<script src" not in body and b"<link" not in body


class Generation:
    """A long streamed /api/generate on its own thread (a count that does not end by itself); `stop` hangs up."""

    def __init__(self, srv: Server) -> None:
        self.srv, self.lines, self._stop = srv, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=600)
        conn.request("POST", "/api/generate", json.dumps({
            "model": "gemma3:270m", "raw": True, "prompt": "Counting to a thousand: 1, 2, 3, 4, 5, 6,",
            "options": {"temperature": 0, "num_predict": 4000}}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        while not self._stop.is_set() and (line := resp.readline()):
            self.lines.append(json.loads(line))
        conn.close()                       # the server cancels the rest

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)


def wait_running(srv: Server, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = live(srv)["models"]
        if models and models[0]["running"] and models[0]["pieces"] >= 3 and models[0]["bytes_from_disk"] > 0:
            return models[0]
        time.sleep(0.3)
    pytest.fail(f"no streaming generation running after {timeout:.0f} s: {live(srv)}")


GREEN, AMBER = b"\x10\xb9\x81", b"\xf5\x9e\x0b"     # the "running" badge; NVMe in the tier picture


def test_the_page_during_a_streaming_generation(streaming_server, tmp_path):
    srv = streaming_server
    for attempt in range(3):           # a fast machine may finish a generation before the browser looks: again
        gen = Generation(srv)
        try:
            m = wait_running(srv)
            assert m["mode"] == "dense-stream" and m["streamed_layers"] == 4 and m["tok_s"] > 0
            status, headers, svg = srv.request("GET", "/api/hypura/tiers.svg?model=gemma3:270m")
            assert status == 200 and svg.count(b'tier-nvme" data-layer=') == 4   # the 4 streamed FFN layers
            png = tmp_path / f"live{attempt}.png"
            r = chromium(str(tmp_path / "profile"), f"--screenshot={png}", "--window-size=1000,700",
                         "--virtual-time-budget=4000", srv.url + "/")
            assert png.exists(), r.stderr[-2000:]
            dom = chromium(str(tmp_path / "profile2"), "--dump-dom", "--virtual-time-budget=4000", srv.url + "/").stdout
            running = live(srv)["models"][0]["running"]
        finally:
            gen.stop()
        width, bpp, rows = png_pixels(png.read_bytes())
        pixels = [row[i:i + 3] for row in rows[::2] for i in range(0, len(row), bpp * 2)]
        colours = set(pixels)
        if running and GREEN in colours and 'class="state running"' in dom:
            break
    else:
        pytest.fail("three generations ended before the browser saw them running")
    assert all("error" not in x for x in gen.lines) and len(gen.lines) >= 3
    # the page, as the browser built it: the model, running, its figures and the tier picture
    assert 'data-name="gemma3:270m"' in dom
    assert dom.count('tier-nvme" data-layer=') == 4 and dom.count('tier-ram" data-layer=') > 30
    assert "GB/s" in dom and "tok/s" in dom
    # the screenshot is not blank: many colours, much that is not background, the tiers' NVMe amber, the badge
    non_background = sum(p not in (b"\xf3\xf4\xf6", b"\xff\xff\xff") for p in pixels) / len(pixels)
    assert len(colours) > 20 and non_background > 0.05, (len(colours), non_background)
    assert AMBER in colours and GREEN in colours


@pytest.fixture(scope="module")
def expert_server(tmp_path_factory: pytest.TempPathFactory):
    from hypura_server import Settings, create_app, make_server
    from hypura_synthetic import TINY, write_synthetic

    models = tmp_path_factory.mktemp("live-moe")
    write_synthetic(models / "tinymix.gguf", "mixtral-8x7b", qtype="Q8_0", **TINY["mixtral-8x7b"])
    settings = Settings(models_dir=models, ollama_dir=tmp_path_factory.mktemp("o2"), mode="expert-stream", ctx=256,
                        ram_budget=5 << 20, host="127.0.0.1")    # a cache of 6 of 8 experts per layer
    app = create_app(settings)
    srv = make_server(app, "127.0.0.1", 0, threads=4)
    threading.Thread(target=srv.run, daemon=True).start()
    yield Server("127.0.0.1", srv.effective_port, models, settings.ollama_dir, app)
    srv.close()
    app.extensions["hypura"].manager.close()


def test_expert_cache_hit_rates_per_layer_reach_the_page(expert_server, tmp_path):
    srv = expert_server
    status, _, body = srv.request("POST", "/api/generate", {"model": "tinymix", "prompt": "a b c", "stream": False,
                                                             "raw": True, "options": {"temperature": 0, "num_predict": 16}})
    assert status == 200, body
    m = live(srv)["models"][0]
    assert m["mode"] == "expert-stream" and not m["running"]
    assert set(m["hit_rate_by_layer"]) == {"0", "1"} and all(0 < v <= 1 for v in m["hit_rate_by_layer"].values())
    assert 0 < m["expert_cache_hit_rate"] < 1 and m["last_eval_tps"] > 0
    status, _, svg = srv.request("GET", "/api/hypura/tiers.svg?model=tinymix:latest")
    assert status == 200 and svg.count(b'class="hit"') == 2
    streamed = re.findall(rb'tier-nvme" data-layer="(\w+)" data-part="(\w+)"', svg)
    assert (b"0", b"ffn") in streamed and (b"1", b"ffn") in streamed           # the experts stream
    assert {part for _, part in streamed} <= {b"ffn", b"embedding"}            # CPU plans map an untied embedding
    dom = chromium(str(tmp_path / "profile"), "--dump-dom", "--virtual-time-budget=3000", srv.url + "/").stdout
    assert dom.count('class="hit"') == 2 and pct_text(m["expert_cache_hit_rate"]) in dom


def pct_text(x: float) -> str:
    return f"{100 * x:.1f}%"

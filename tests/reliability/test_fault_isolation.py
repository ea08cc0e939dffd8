"""Fault isolation: llama.cpp aborting (GGML_ASSERT → SIGABRT) kills only that model's worker process.

Real aborts: files that pass the header checks of an unguarded worker (``HYPURA_TEST_WORKER_SKIP_VALIDATION=1``)
and trip llama.cpp's own asserts — at load (block count) and in the middle of a decode (NaN norm epsilon).
A mid-stream abort uses the worker's test hook ``HYPURA_TEST_WORKER_ABORT_MARKER`` (``os.abort()`` after the first
streamed piece). Both hooks are read only by the worker, only from the environment of this test's server.
"""
from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from gguf_mutations import header_fields, regressions
from soak import ServeProcess, _children, request

MARKER = "@@hypura-test-abort@@"


@pytest.fixture(scope="module")
def srv(tiny_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("fault-models")
    data = tiny_models["dense"].read_bytes()
    bad = regressions(data, header_fields(data)[0])
    (models / "good.gguf").write_bytes(data)
    (models / "other.gguf").write_bytes(tiny_models["moe"].read_bytes())
    (models / "layers.gguf").write_bytes(bad["block_count_65536"])
    (models / "eps.gguf").write_bytes(bad["rms_eps_nan"])
    env = {"HYPURA_TEST_WORKER_SKIP_VALIDATION": "1", "HYPURA_TEST_WORKER_ABORT_MARKER": MARKER}
    with ServeProcess(models, "--mode", "resident", "--ctx", "1024", "--threads", "1", "--max-loaded", "3",
                      env=env) as s:
        yield s


def gen(srv, model, prompt="hi", stream=False, n=4):
    return request(srv.url, "POST", "/api/generate",
                   {"model": model, "prompt": prompt, "stream": stream, "options": {"num_predict": n, "temperature": 0}})


def _ok(srv, model="good"):
    status, body = gen(srv, model)
    assert status == 200 and json.loads(body)["done"] is True, body


def test_abort_while_loading_is_a_500(srv):
    for _ in range(2):   # and again: a fresh worker is started for the second request
        status, body = gen(srv, "layers")
        err = json.loads(body)["error"]
        assert status == 500 and "crashed" in err and "SIGABRT" in err and "GGML_ASSERT" in err, err
    assert srv.alive()
    _ok(srv)


def test_abort_during_decode_is_a_500_and_the_worker_restarts(srv):
    for stream in (False, True):
        status, body = gen(srv, "eps", stream=stream)
        err = json.loads(body)["error"]
        assert status == 500 and "crashed while generating" in err and "SIGABRT" in err, err
    assert srv.alive()
    _ok(srv)


def test_abort_mid_stream(srv):
    _ok(srv)
    before = set(_children(srv.pid))
    status, body = gen(srv, "good", prompt=f"say {MARKER}", stream=True, n=50)
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert status == 200 and "response" in lines[0] and "crashed" in lines[-1]["error"], lines
    status, body = gen(srv, "good", prompt=f"again {MARKER}", stream=False, n=50)
    assert status == 500 and "crashed" in json.loads(body)["error"]
    _ok(srv)                 # restarted: a new worker process
    after = set(_children(srv.pid))
    assert after - before, (before, after)
    assert all(open(f"/proc/{c}/stat").read().rsplit(")", 1)[1].split()[0] != "Z" for c in after)  # no zombies


def test_other_models_keep_streaming_through_a_crash(srv):
    """A long stream on one model runs on while another model's worker aborts twice."""
    _ok(srv, "gemma3:270m")          # a real model: slow enough on 2 cores that the stream outlives 2 crashes
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    conn.request("POST", "/api/generate", body=json.dumps(
        {"model": "gemma3:270m", "prompt": "Count from 1 to 1000, separated by commas.",
         "options": {"num_predict": 400, "temperature": 0}}))
    resp = conn.getresponse()
    assert resp.status == 200
    first = json.loads(resp.readline())
    assert first["done"] is False
    crashes: list[tuple[int, float]] = []
    t = threading.Thread(target=lambda: crashes.extend((gen(srv, "eps")[0], time.monotonic()) for _ in range(2)))
    t.start()
    chunks, after_crash = [first], 0
    while not chunks[-1].get("done") and "error" not in chunks[-1]:
        chunks.append(json.loads(resp.readline()))
        after_crash += bool(crashes)
    t.join()
    conn.close()
    assert [c[0] for c in crashes] == [500, 500]
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] > 100, chunks[-1]
    assert after_crash > 0, "the stream ended before the other model crashed: the test proved nothing"

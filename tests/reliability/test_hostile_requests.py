"""Hostile requests against a real `hypura serve`: schemathesis over the published OpenAPI description
(schema-valid and schema-violating bodies), plus malformed JSON, wrong types, huge numbers, huge bodies,
path-like model names and slow clients. Bad input is a 4xx with a JSON error — never a 500 — and the
server stays up and keeps serving."""
from __future__ import annotations

import json
import random
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

from soak import ServeProcess, request

ROOT = Path(__file__).resolve().parents[2]
SPEC = json.loads((ROOT / "docs" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
MODEL = "tiny"
USES_MODEL = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show",
              "/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@schemathesis.check
def no_server_error(ctx, response, case):
    """No 5xx, except a documented 501 (push: Hypura reaches no registry)."""
    documented = str(response.status_code) in case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500 and not (response.status_code == 501 and documented):
        raise AssertionError(f"{response.status_code} for {case.method} {case.path}: {response.text[:300]}")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server whose one model is a tiny llama with a 256-token context: any generation ends quickly."""
    from hypura_synthetic import get_preset, write_synthetic

    models = tmp_path_factory.mktemp("req-models")
    shape = replace(get_preset("llama3-70b").scaled(layers=2, scale=32, vocab=512), ctx=256)
    write_synthetic(models / f"{MODEL}.gguf", shape)
    with ServeProcess(models, "--mode", "resident", "--ctx", "256", "--threads", "1") as s:
        yield s


def test_openapi_is_served_and_matches_docs(srv):
    status, body = request(srv.url, "GET", "/openapi.json")
    assert status == 200 and json.loads(body) == SPEC, "docs/openapi.json is stale: python -m hypura_server.openapi"
    ours = {r for r in SPEC["paths"]}
    assert {"/api/generate", "/api/chat", "/v1/chat/completions", "/api/tags"} <= ours


def _schemathesis_case(srv, case, rng: random.Random) -> None:
    if isinstance(case.body, dict) and case.path in USES_MODEL and rng.random() < 0.6:
        case.body["model"] = MODEL          # reach the engine, not only the name check
        if isinstance(case.body.get("options"), dict) and rng.random() < 0.5:
            case.body["options"]["num_predict"] = 8
    case.call_and_validate(base_url=srv.url, checks=[no_server_error], timeout=20)
    assert srv.alive()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_schemathesis(srv, case):
    _schemathesis_case(srv, case, random.Random(hash(repr(case.body)) & 0xFFFF))


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_schemathesis_long(srv, case):
    _schemathesis_case(srv, case, random.Random(hash(repr(case.body)) & 0xFFFF))


BAD_BODIES = [b"{", b"[]", b"null", b"1e999999", b'"x"', b"\xff\xfe\x00", b'{"model": "tiny", "prompt": "\\ud800"}',
              b'{"model": ' * 5000 + b"1" + b"}" * 5000, b'{"model": "tiny", "options": {"num_predict": 1e400}}',
              b'{"model": "tiny", "options": {"num_ctx": 99999999999999999999999}}',
              b'{"model": "tiny", "prompt": "hi", "options": {"seed": -1, "top_k": -5, "temperature": -3}}',
              b'{"model": "tiny", "keep_alive": 1e308}', b'{"model": "tiny", "keep_alive": "9999999999h"}',
              b'{"model": "tiny", "context": [99999999999, -1]}', b'{"model": "tiny", "prompt": 5}',
              b'{"model": "tiny", "messages": "hi"}', b'{"model": "tiny", "messages": [{"role": 1}]}',
              b'{"model": "tiny", "format": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}',
              b'{"model": "tiny", "format": {"$ref": "#"}}']


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed", "/api/show", "/api/create",
                                  "/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_malformed_and_extreme_bodies(srv, path):
    for raw in BAD_BODIES:
        status, body = request(srv.url, "POST", path, raw=raw)
        assert status < 500, (path, raw[:80], status, body[:300])
        if status >= 400:
            assert json.loads(body)["error"], body
    assert srv.alive()


def test_bad_stream_flag_does_not_leave_the_model_held(srv):
    """Regression (found by schemathesis): a wrong-typed ``stream`` was checked after the model was leased, so
    the 400 left the model's queue held and every later request for it hung."""
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    for path, extra in (("/api/generate", {"prompt": "hi"}), ("/api/chat", chat), ("/v1/completions", {"prompt": "hi"}),
                        ("/v1/chat/completions", chat)):
        for bad in ({"stream": [None]}, {"stream": "yes"}, {"stream": True, "stream_options": 5}):
            if "stream_options" in bad and not path.startswith("/v1"):
                continue
            status, body = request(srv.url, "POST", path, {"model": MODEL, **extra, **bad})
            assert status == 400, (path, bad, status, body)
            status, body = request(srv.url, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                                                      "options": {"num_predict": 2}}, timeout=30)
            assert status == 200, (path, bad, body)


PATH_NAMES = ["../../etc/passwd", "/etc/passwd", "..", "a/../../b", "x\\..\\y", "tiny/../../x", "~root/.ssh/id_rsa",
              "%2e%2e%2fetc", "tiny\x00.gguf", "C:\\Windows", "tiny:../../x", "a" * 10000, "🦙", "", " ", "tiny:"]


def test_path_like_model_names(srv):
    for name in PATH_NAMES:
        for path, body in (("/api/generate", {"model": name, "prompt": "hi"}), ("/api/show", {"model": name}),
                           ("/api/delete", {"model": name}), ("/api/copy", {"source": MODEL, "destination": name}),
                           ("/api/create", {"model": name, "from": MODEL}),
                           ("/api/create", {"model": "x", "from": name}), ("/v1/chat/completions", {
                               "model": name, "messages": [{"role": "user", "content": "hi"}]})):
            method = "DELETE" if path == "/api/delete" else "POST"
            status, out = request(srv.url, method, path, body)
            assert 400 <= status < 500, (path, name, status, out[:200])
    status, _ = request(srv.url, "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd")
    assert 400 <= status < 500
    status, body = request(srv.url, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                                              "options": {"num_predict": 2}})
    assert status == 200, body                 # the model survived the deletes above


def test_huge_body_is_413_and_fast(srv):
    t0 = time.perf_counter()
    status, body = request(srv.url, "POST", "/api/generate", raw=b'{"model": "tiny", "prompt": "' + b"x" * (80 << 20) + b'"}')
    assert status == 413 and json.loads(body)["error"]
    assert time.perf_counter() - t0 < 30
    long_prompt = {"model": MODEL, "prompt": "word " * 5000, "stream": False}   # fits the body limit, not the context
    status, body = request(srv.url, "POST", "/api/generate", long_prompt)
    assert status == 400 and "context" in json.loads(body)["error"]


def test_slow_and_stalled_clients(srv):
    """Clients that trickle their request, stall half-way or hold idle connections do not block others."""
    stalled = []
    for _ in range(20):   # more than waitress' worker threads
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        stalled.append(s)
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    trickle = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}).encode()
    head = (f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    t0 = time.perf_counter()
    for i in range(0, len(head + body), 7):
        trickle.sendall((head + body)[i:i + 7])
        time.sleep(0.01)
    status, out = request(srv.url, "POST", "/api/generate", json.loads(body))   # meanwhile a normal client
    assert status == 200, out
    reply = b""
    while chunk := trickle.recv(65536):
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert time.perf_counter() - t0 < 60
    for s in stalled + idle + [trickle]:
        s.close()
    assert srv.alive()
    status, _ = request(srv.url, "GET", "/api/version")
    assert status == 200

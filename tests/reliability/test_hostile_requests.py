"""Hostile requests against a real `hypura serve`: schemathesis over the published OpenAPI description
(schema-valid and schema-violating bodies), plus malformed JSON, wrong types, huge numbers, huge bodies,
path-like model names and slow clients. Bad input is a 4xx with a JSON error — never a 500 — and the
server stays up and keeps serving. Hypothesis fuzzes option ranges, ``format`` schema shapes, templates and
Modelfiles under the oracle of `hostile_support.hostile`: 400 or served, never a 500, never a hang, the
model still serves afterwards, and `/api/version` answers quickly during every request."""
from __future__ import annotations

import json
import random
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from hostile_support import hostile
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
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        stalled.append(s)
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    trickle = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}).encode()
    head = (f"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
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


# -- fuzzing under the oracle: option ranges, schema shapes, templates, Modelfiles (issue 19) ----------------
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LONG_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
OPTION_KEYS = ["temperature", "top_k", "top_p", "min_p", "seed", "repeat_penalty", "repeat_last_n", "presence_penalty",
               "frequency_penalty", "num_predict", "num_ctx", "num_keep", "stop", "mirostat", "num_batch"]
NUMBERS = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.sampled_from([0, 1, -1, -2, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
                                                                         2 ** 63, 2 ** 64, -(2 ** 31) - 1]),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, 1e39]))
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=3), NUMBERS)
OPTIONS = st.dictionaries(st.sampled_from(OPTION_KEYS), st.one_of(NUMBERS, JUNK), max_size=5)
SCHEMA_KEYS = ["type", "properties", "items", "enum", "anyOf", "oneOf", "$ref", "const", "minLength", "maxLength",
               "minItems", "maxItems", "$defs", "required"]
TYPES = st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null", "nope"])
REFS = st.sampled_from(["#", "#/$defs/A", "#/$defs/B", "#/properties/a", "#/nope", "http://x/y", "#/$defs"])
SCHEMAS = st.recursive(
    st.one_of(st.just({}), st.builds(lambda t: {"type": t}, TYPES), st.builds(lambda r: {"$ref": r}, REFS), JUNK),
    lambda kids: st.one_of(
        st.dictionaries(st.sampled_from(SCHEMA_KEYS), st.one_of(kids, JUNK, TYPES, REFS), max_size=4),
        st.builds(lambda p: {"type": "object", "properties": p}, st.dictionaries(st.sampled_from("abc"), kids, max_size=3)),
        st.builds(lambda a: {"anyOf": a}, st.lists(kids, max_size=3)),
        st.builds(lambda d, r: {"$defs": d, "$ref": r}, st.dictionaries(st.sampled_from("AB"), kids, max_size=2), REFS),
        st.builds(lambda e: {"enum": e}, st.lists(JUNK, max_size=4))),
    max_leaves=12)
SNIPPETS = ["{{ messages[0]['content'] }}", "{% for m in messages %}{{ m.content }}{% endfor %}", "{% if tools %}",
            "{% endif %}", "{% for %}", "{{ 'a' * 100000000 }}", "{{ raise_exception('x') }}", "{{ x.y.z() }}",
            "{% set ns = namespace(s='ab') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "{{ 10 ** 10 ** 10 }}", "{{ ''.__class__ }}", "{{ messages|tojson(indent=9999999) }}", "{{", "}}",
            "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('a') }}", "{{ '%99999999d' % 1 }}", "{{ cycler }}",
            "{{ range(10**9)|list }}", "{{ 'x'|center(99999999) }}", "{{ bos_token }}", "\x00", "{#", "{{ 1/0 }}",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"]
TEMPLATES = st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=10)), min_size=1, max_size=4).map("".join)
MF_LINES = st.one_of(st.sampled_from(["FROM tiny", "FROM /etc/passwd", "FROM ../x.gguf", 'TEMPLATE """', '"""',
                                      "PARAMETER top_k 99999999999", "PARAMETER temperature nan", "PARAMETER stop x",
                                      "SYSTEM hi", 'SYSTEM """a', "PARAMETER", "LICENSE x", "# c", "", "\t", "!",
                                      "PARAMETER repeat_last_n -5", "PARAMETER num_ctx 1e400"]),
                     st.text(max_size=12))
MODELFILES = st.builds(lambda lines, pad: "\n".join(lines) + "\n" * pad,
                       st.lists(MF_LINES, min_size=1, max_size=8), st.sampled_from([0, 1, 1000, 50000]))


def _small(opts: dict) -> dict:
    n = opts.get("num_predict")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2 ** 31:
        return opts
    return {**opts, "num_predict": min(n, 8)}


def _fuzz_options(srv, opts):
    for path, body in (("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "options": _small(opts)}),
                       ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                      "options": _small(opts)})):
        hostile(srv, "POST", path, body, model=MODEL)


def _fuzz_schema(srv, schema):
    hostile(srv, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "format": schema,
                                           "options": {"num_predict": 4}}, model=MODEL)


def _fuzz_template(srv, template):
    hostile(srv, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "template": template,
                                           "options": {"num_predict": 2}}, deadline=30, model=MODEL)


def _fuzz_modelfile(srv, text):
    status, _ = hostile(srv, "POST", "/api/create", {"model": "fuzzed", "modelfile": text, "stream": False})
    if status == 200:       # what /api/create stored must then be served or refused, never a 500
        hostile(srv, "POST", "/api/generate", {"model": "fuzzed", "prompt": "hi", "stream": False,
                                               "options": {"num_predict": 2}}, model=MODEL)


@FUZZ
@given(opts=OPTIONS)
def test_fuzz_option_ranges(srv, opts):
    _fuzz_options(srv, opts)


@FUZZ
@given(schema=SCHEMAS)
def test_fuzz_format_schemas(srv, schema):
    _fuzz_schema(srv, schema)


@FUZZ
@given(template=TEMPLATES)
def test_fuzz_templates(srv, template):
    _fuzz_template(srv, template)


@FUZZ
@given(text=MODELFILES)
def test_fuzz_modelfiles(srv, text):
    _fuzz_modelfile(srv, text)


@pytest.mark.slow
@LONG_FUZZ
@given(opts=OPTIONS, schema=SCHEMAS, template=TEMPLATES, text=MODELFILES)
def test_fuzz_long(srv, opts, schema, template, text):
    _fuzz_options(srv, opts)
    _fuzz_schema(srv, schema)
    _fuzz_template(srv, template)
    _fuzz_modelfile(srv, text)

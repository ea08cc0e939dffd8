"""Issue 19, case by case, against a real `hypura serve` on loopback (real worker, real files): leases that
cannot leak, cancellation and timeouts that reach the worker, bounds checked before work starts, validation
at the edge, nothing about the disk told to a caller, Host checks, per-route body limits, and the CLI's
argument checks. Every hostile request goes through `hostile_support.hostile`: answered (200 or a 4xx with
a JSON error) in time, `/api/version` fast meanwhile, and the model still serves afterwards."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hostile_support import error_of, hostile, raw_request, served
from soak import ServeProcess, _children, request

MODEL = "tiny"
TOOLY = "{% if tools %}tools: {{ tools | tojson }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
WORKER_TIMEOUT_S = 6


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """Files outside the models directory: a secret, a FIFO, a GGUF model."""
    d = tmp_path_factory.mktemp("outside")
    (d / "secret.txt").write_text("root:$6$supersecret\n")
    os.mkfifo(d / "pipe.gguf")
    return d


@pytest.fixture(scope="module")
def srv(tmp_path_factory, outside):
    from hypura_synthetic import get_preset, write_synthetic

    models = tmp_path_factory.mktemp("hostile-models")
    shape = replace(get_preset("llama3-70b").scaled(layers=2, scale=32, vocab=512), ctx=256)
    write_synthetic(models / f"{MODEL}.gguf", shape)
    (outside / "allowed").mkdir()
    write_synthetic(outside / "allowed" / "other.gguf", shape)
    env = {"HYPURA_WORKER_TIMEOUT_S": str(WORKER_TIMEOUT_S), "HYPURA_CREATE_PATHS": str(outside / "allowed")}
    with ServeProcess(models, "--mode", "resident", "--ctx", "256", "--threads", "1", env=env) as s:
        s.models = models
        yield s


def _chat(model: str, **extra) -> dict:
    return {"model": model, "stream": False, "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": 2}, **extra}


# -- 1. leases that cannot leak ---------------------------------------------------------------------
def test_bad_tools_are_400_and_nothing_hangs(srv):
    status, out = request(srv.url, "POST", "/api/create", {"model": "tooly", "from": MODEL, "template": TOOLY,
                                                           "stream": False})
    assert status == 200, out
    for body in (_chat("tooly", tools=[{"function": "x"}]), _chat("tooly", tools=["x"]), _chat("tooly", tools=[5]),
                 _chat("tooly", tools=[{"function": {"name": ["x"]}}]), _chat("tooly", tools={"a": 1})):
        status, out = hostile(srv, "POST", "/api/chat", body, model=MODEL)
        assert status == 400 and "tools" in error_of(out), out
    v1 = {"model": "tooly", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
          "tools": [{"type": "function", "function": {"name": ["x"]}}]}
    status, out = hostile(srv, "POST", "/v1/chat/completions", v1, model=MODEL)
    assert status == 400 and "tools" in error_of(out)
    good = _chat("tooly", tools=[{"type": "function", "function": {"name": "x", "parameters": {}}}])
    status, out = hostile(srv, "POST", "/api/chat", good, model="tooly")
    assert status == 200, out
    t0 = time.perf_counter()
    status, _ = request(srv.url, "DELETE", "/api/delete", {"model": "tooly"}, timeout=30)
    assert status == 200 and time.perf_counter() - t0 < 10


def test_every_failure_between_lease_and_release_gives_the_model_back(srv):
    """Each failure point after the lease: the prompt builder (a template that raises, a template that
    fails at render time, a prompt longer than the context), a grammar llama.cpp gets, a disconnect while
    queued behind a running stream. After each the model serves at once."""
    request(srv.url, "POST", "/api/create", {"model": "raiser", "from": MODEL, "stream": False,
                                             "template": "{{ raise_exception('no') }}"})
    cases = [("/api/chat", _chat("raiser")),
             ("/api/generate", {"model": MODEL, "prompt": "x", "template": "{{ messages[0]['content'].nope() }}",
                                "stream": False}),
             ("/api/generate", {"model": MODEL, "prompt": "word " * 2000, "stream": False}),
             ("/api/generate", {"model": MODEL, "prompt": "word " * 2000}),
             ("/v1/completions", {"model": MODEL, "prompt": "word " * 2000}),
             ("/api/generate", {"model": MODEL, "prompt": "x", "raw": True, "context": [10 ** 9], "stream": False})]
    for path, body in cases:
        status, out = hostile(srv, "POST", path, body, model=MODEL)
        assert status == 400, (path, status, out[:300])
    # a client that gives up while queued behind another request
    s = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"model": MODEL, "prompt": "a long one", "options": {"num_predict": 200}}).encode()
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    q = socket.create_connection(("127.0.0.1", srv.port))
    q.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    q.close()
    s.close()
    status, out = served(srv.url, MODEL, timeout=20)
    assert status == 200, out


def test_delete_while_a_stream_runs_never_blocks(srv):
    request(srv.url, "POST", "/api/create", {"model": "busy", "from": MODEL, "stream": False})
    s = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"model": "busy", "prompt": "go", "options": {"num_predict": 100000, "num_ctx": 256}}).encode()
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert b"200" in s.recv(4096)
    t0 = time.perf_counter()
    status, _ = request(srv.url, "DELETE", "/api/delete", {"model": "busy"}, timeout=30)
    assert status == 200 and time.perf_counter() - t0 < 8      # at most unload's 5 s wait
    s.close()
    assert served(srv.url, MODEL)[0] == 200


def test_a_stopped_worker_is_killed_and_replaced(srv):
    assert served(srv.url, MODEL)[0] == 200
    workers = _children(srv.pid)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.perf_counter()
    status, out = raw_request(srv.url, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                                                 "options": {"num_predict": 2}}, timeout=60)
    took = time.perf_counter() - t0
    assert status == 500 and "did not answer" in error_of(out), out
    assert took < WORKER_TIMEOUT_S + 5, took
    assert served(srv.url, MODEL)[0] == 200                     # a fresh worker
    assert not set(workers) & set(_children(srv.pid))


# -- 2. keep_alive ----------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e308", b'"nan"', b'"inf"', b"1e400",
                                 b"99999999999999999999999999", b'"' + b"9" * 100000 + b'x"'])
def test_keep_alive_out_of_range_is_400(srv, raw):
    body = b'{"model": "tiny", "prompt": "hi", "stream": false, "options": {"num_predict": 1}, "keep_alive": ' + raw + b"}"
    status, out = hostile(srv, "POST", "/api/generate", raw=body, model=MODEL)
    assert status == 400 and "keep_alive" in error_of(out), out
    status, _ = request(srv.url, "GET", "/api/ps")
    assert status == 200
    before = _cpu_s(srv.pid)
    time.sleep(1.0)
    assert _cpu_s(srv.pid) - before < 0.3                  # no keep-alive thread spinning


def test_serve_refuses_keep_alive_nan(tmp_path):
    for value in ("nan", "inf", "1e308"):
        res = subprocess.run([sys.executable, "-m", "hypura.main", "serve", "--port", "0", "--models", str(tmp_path),
                              "--keep-alive", value], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "keep-alive" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


# -- 3. Host header ---------------------------------------------------------------------------------
def test_host_header_check(srv):
    for host in ("evil.example", "evil.example:11434", "127.0.0.1.nip.io", "localhost.evil.example", "[2606:4700::1]"):
        for path in ("/api/version", "/api/tags"):
            status, out = raw_request(srv.url, "GET", path, headers={"Host": host})
            assert status == 403 and json.loads(out)["error"], (host, status)
    status, out = raw_request(srv.url, "POST", "/api/generate", {"model": MODEL, "prompt": "hi"},
                              headers={"Host": "evil.example"})
    assert status == 403
    for host in ("localhost", f"localhost:{srv.port}", f"127.0.0.1:{srv.port}", "[::1]:80", "app.localhost", ""):
        status, _ = raw_request(srv.url, "GET", "/api/version", headers={"Host": host})
        assert status == 200, host


def test_allowed_hosts_are_configurable(tmp_path):
    with ServeProcess(tmp_path, env={"HYPURA_ALLOWED_HOSTS": "proxy.example,*.corp.example"}) as s:
        for host, want in (("proxy.example", 200), ("a.corp.example", 200), ("evil.example", 403)):
            assert raw_request(s.url, "GET", "/api/version", headers={"Host": host})[0] == want, host
    with ServeProcess(tmp_path, host="0.0.0.0") as s:     # not loopback-bound: no Host check (as Ollama)
        assert raw_request(s.url, "GET", "/api/version", headers={"Host": "evil.example"})[0] == 200


# -- 4. /api/create FROM tells nothing about the disk ----------------------------------------------
def test_create_from_paths_outside_the_store(srv, outside):
    messages = set()
    for src in ("/etc/shadow", "/etc/passwd", "/nonexistent/x.gguf", str(outside / "secret.txt"),
                str(outside / "pipe.gguf"), str(outside), "/dev/zero", "../../../../etc/passwd", "~root/.bashrc",
                str(outside / "nope.gguf"), "./../" + str(outside / "secret.txt")):
        status, out = hostile(srv, "POST", "/api/create", {"model": "x", "from": src, "stream": False}, deadline=10)
        assert status == 400, (src, out)
        msg = error_of(out)
        assert "root" not in msg.replace(repr(src), "") and "supersecret" not in msg and "magic" not in msg, msg
        messages.add(msg.replace(repr(src), "SRC"))
    assert len(messages) == 1, messages                 # missing, unreadable, not allowed: one answer
    os.symlink("/etc/passwd", srv.models / "link.gguf")
    status, out = request(srv.url, "POST", "/api/create", {"model": "x", "from": "link.gguf", "stream": False})
    assert status == 400 and error_of(out).replace(repr("link.gguf"), "SRC") in messages
    (srv.models / "notes.gguf").write_text("root:$6$supersecret\n")     # inside, but no GGUF: no bytes echoed
    status, out = request(srv.url, "POST", "/api/create", {"model": "x", "from": "notes.gguf", "stream": False})
    assert status == 400 and "root" not in error_of(out) and "supersecret" not in error_of(out), out
    (srv.models / "notes.gguf").unlink()
    status, out = request(srv.url, "POST", "/api/create", {"model": "inside", "from": str(srv.models / "tiny.gguf")})
    assert status == 200, out
    status, out = request(srv.url, "POST", "/api/create", {"model": "allowed",
                                                           "from": str(outside / "allowed" / "other.gguf")})
    assert status == 200, out                           # HYPURA_CREATE_PATHS
    assert served(srv.url, "allowed")[0] == 200


def test_tags_survive_a_fifo_in_the_store(srv):
    fifo = srv.models / "fifo.gguf"
    os.mkfifo(fifo)
    try:
        status, out = hostile(srv, "GET", "/api/tags", deadline=10)
        assert status == 200 and any(m["name"].startswith(MODEL) for m in json.loads(out)["models"])
        hostile(srv, "POST", "/api/generate", {"model": "fifo", "prompt": "hi"}, deadline=10, model=MODEL)
    finally:
        fifo.unlink()


# -- 5. parsers and body limits ---------------------------------------------------------------------
def test_modelfile_parser_is_linear(srv):
    for text in ("FROM tiny\n" + "\n" * 80000 + "!", "FROM tiny\n" + " " * 80000 + "!", "FROM tiny\n" + "a" * 80000,
                 'FROM tiny\nTEMPLATE """' + "x\n" * 40000, "FROM tiny\n" + "PARAMETER " * 8000):
        t0 = time.perf_counter()
        status, out = hostile(srv, "POST", "/api/create", {"model": "mf", "modelfile": text, "stream": False},
                              deadline=10, model=MODEL)
        assert time.perf_counter() - t0 < 3, text[:40]


def test_blob_upload_over_64_mib(srv):
    data = os.urandom(1 << 20) * 70        # 70 MiB: above the JSON limit
    dig = "sha256:" + hashlib.sha256(data).hexdigest()
    status, out = raw_request(srv.url, "POST", f"/api/blobs/{dig}", raw=data, timeout=120)
    assert status == 201, out[:200]
    assert raw_request(srv.url, "HEAD", f"/api/blobs/{dig}")[0] == 200
    (srv.models / "blobs" / f"sha256-{dig[7:]}").unlink()


def _read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    s.close()
    return out


def test_json_body_limit_while_reading(srv):
    """A 256 MiB Content-Length to /api/generate is answered 413 while it is read (not stored), and a chunked
    one too; the server's memory does not grow by the body's size."""
    from soak import _status

    rss0 = _status(srv.pid)["rss_kb"]
    probe_t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: 268435456\r\n\r\n")
    chunk = b"x" * (1 << 20)
    sent = 0
    s.settimeout(30)
    try:
        while sent < 256 << 20:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply, reply[:300]
    assert time.perf_counter() - probe_t0 < 60
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(100):
            s.sendall(b"100000\r\n" + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 413") and b'"invalid_request_error"' in reply, reply[:300]
    assert _status(srv.pid)["rss_kb"] - rss0 < 64 << 10
    assert served(srv.url, MODEL)[0] == 200


# -- 6. validation at the edge ----------------------------------------------------------------------
@pytest.mark.parametrize("opts,name", [({"top_k": 2 ** 31}, "top_k"), ({"top_k": 2 ** 64}, "top_k"),
                                       ({"repeat_last_n": 2 ** 31}, "repeat_last_n"), ({"seed": 2 ** 70}, "seed"),
                                       ({"num_predict": 2 ** 63}, "num_predict"), ({"temperature": 1e300}, "temperature"),
                                       ({"repeat_penalty": 1e39}, "repeat_penalty"), ({"top_p": "x"}, "top_p")])
def test_option_ranges_are_400_naming_the_field(srv, opts, name):
    for path, body in (("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "options": opts}),
                       ("/api/chat", {**_chat(MODEL), "options": opts})):
        status, out = hostile(srv, "POST", path, body, model=MODEL)
        assert status == 400 and name in error_of(out), out


def _deep(n: int) -> dict:
    root = d = {}
    for _ in range(n):
        d["type"], d["properties"] = "object", {"a": {}}
        d = d["properties"]["a"]
    return root


SCHEMAS = [{"enum": 5}, {"anyOf": 5}, {"properties": [1]}, {"$ref": 5}, _deep(400), {"$ref": "#"},
           {"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"},
           {"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}}, "$ref": "#/$defs/A"},
           {"enum": list(range(100000))}, {"type": "string", "maxLength": 10 ** 9}, {"type": "array", "minItems": -1},
           {"type": 5}, {"oneOf": []}, {"type": "string", "minLength": 5, "maxLength": 2}]


@pytest.mark.parametrize("i", range(len(SCHEMAS)))
def test_format_schema_shapes_are_400(srv, i):
    schema = SCHEMAS[i]
    status, out = hostile(srv, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "format": schema,
                                                         "stream": False}, deadline=10, model=MODEL)
    assert status == 400, out
    status, out = hostile(srv, "POST", "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}, deadline=10)
    assert status == 400, out


def test_a_recursive_schema_through_an_object_is_served(srv):
    tree = {"$defs": {"T": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}}},
            "$ref": "#/$defs/T"}
    status, out = hostile(srv, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "format": tree,
                                                         "stream": False, "options": {"num_predict": 4}})
    assert status == 200, out


@pytest.mark.parametrize("template", ["{% if %}", "{{ x", "{% for %}", "{% endfor %}", "{{ 1 + }}", "{% macro %}"])
def test_template_syntax_errors_are_400(srv, template):
    status, out = hostile(srv, "POST", "/api/generate", {"model": MODEL, "prompt": "hi", "template": template,
                                                         "stream": False}, model=MODEL)
    assert status == 400 and "template" in error_of(out)


def test_lone_surrogates_are_400(srv):
    for raw in (b'{"model": "tiny", "prompt": "\\ud800", "stream": false}',
                b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\udfff"}], "stream": false}',
                b'{"model": "tiny", "prompt": "hi", "system": "\\udbff", "stream": false}'):
        path = "/api/chat" if b"messages" in raw else "/api/generate"
        status, out = hostile(srv, "POST", path, raw=raw, model=MODEL)
        assert status == 400 and "surrogate" in error_of(out)
    ok = b'{"model": "tiny", "prompt": "\\ud83d\\ude00", "stream": false, "options": {"num_predict": 1}}'
    assert hostile(srv, "POST", "/api/generate", raw=ok)[0] == 200      # a proper pair is a character


@pytest.mark.parametrize("spec", [{"template": 5}, {"template": "{% if %}"}, {"system": ["x"]},
                                  {"parameters": {"top_k": 2 ** 64}}, {"parameters": {"temperature": "hot"}},
                                  {"parameters": [1]}, {"modelfile": "FROM tiny\nPARAMETER repeat_last_n 99999999999"},
                                  {"modelfile": 'FROM tiny\nTEMPLATE """{% for %}"""'}])
def test_create_validates_what_it_stores(srv, spec):
    body = {"model": "stored", "stream": False, **({} if "modelfile" in spec else {"from": MODEL}), **spec}
    status, out = hostile(srv, "POST", "/api/create", body)
    assert status == 400, out
    status, _ = request(srv.url, "POST", "/api/show", {"model": "stored"})
    assert status == 404                                # nothing stored


def test_openai_embeddings_and_completions_defaults(srv):
    for dims in (-1, 0, -(2 ** 40)):
        status, out = hostile(srv, "POST", "/v1/embeddings", {"model": MODEL, "input": "hi", "dimensions": dims})
        assert status == 400 and "dimensions" in error_of(out)
    status, out = hostile(srv, "POST", "/api/embed", {"model": MODEL, "input": "hi", "dimensions": -3})
    assert status == 400
    status, out = hostile(srv, "POST", "/v1/completions", {"model": MODEL, "prompt": "Once upon a time",
                                                           "temperature": 1.0, "seed": 1})
    assert status == 200
    assert json.loads(out)["usage"]["completion_tokens"] <= 16      # OpenAI's default max_tokens


# -- 7. bounds and cancellation ---------------------------------------------------------------------
def test_bounds_checked_before_the_work(srv):
    from soak import _status

    cases = [("/api/generate", {"model": MODEL, "prompt": "hi", "format": {"enum": [str(i) for i in range(100000)]}}),
             ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "a"}] * 100000}),
             ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}] * 100000}),
             ("/api/generate", {"model": MODEL, "prompt": "hi", "template": "{{ 'a' * 200000000 }}"}),
             ("/api/generate", {"model": MODEL, "prompt": "hi",
                                "template": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                                            "{% endfor %}"}),
             ("/api/generate", {"model": MODEL, "prompt": "hi", "template": "{{ 'ab' * 100000 }}" * 64}),
             ("/api/embed", {"model": MODEL, "input": ["a"] * 3000}),
             ("/v1/embeddings", {"model": MODEL, "input": ["a"] * 3000}),
             ("/api/generate", {"model": MODEL, "prompt": "x" * (1 << 22), "raw": True}),
             ("/api/tags", None)]
    for path, body in cases:
        rss0 = _status(srv.pid)["rss_kb"]
        status, out = hostile(srv, "GET" if body is None else "POST", path, body, deadline=20, model=MODEL)
        assert status == 400 or body is None, (path, out[:300])
        assert _status(srv.pid)["rss_kb"] - rss0 < 256 << 10, path     # no 12 GB template


def test_embedding_loop_stops_when_the_client_leaves(srv):
    body = json.dumps({"model": MODEL, "input": ["some text to embed " * 4] * 2000}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /api/embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.5)
    s.close()
    t0 = time.perf_counter()
    status, _ = served(srv.url, MODEL)
    assert status == 200 and time.perf_counter() - t0 < 3


# -- 8. the CLI -------------------------------------------------------------------------------------
def _hypura(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hypura.main", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_cli_bad_values_are_one_line_exit_2(srv, outside):
    fifo = str(outside / "pipe.gguf")
    tiny = str(srv.models / "tiny.gguf")
    for args in (["inspect", fifo], ["plan", fifo], ["run", fifo, "-p", "x"], ["inspect", "/dev/zero"],
                 ["plan", tiny, "--gpu-budget", "9" * 400], ["plan", tiny, "--ram-budget", "1e999G"],
                 ["run", tiny, "--top-k", "99999999999", "-p", "x"], ["run", tiny, "--temp", "nan", "-p", "x"],
                 ["run", tiny, "--ctx", "0", "-p", "x"], ["serve", "--port", "99999"], ["run", tiny, "--threads", "-1"]):
        res = _hypura(*args, timeout=20)
        assert res.returncode == 2, (args, res.returncode, res.stderr[-500:])
        assert "Traceback" not in res.stderr and "GGML" not in res.stderr, (args, res.stderr[-500:])
        assert len([ln for ln in res.stderr.splitlines() if "error" in ln or ln.startswith("hypura")]) == 1, res.stderr


def test_cli_threads_clamped(srv):
    res = _hypura("run", str(srv.models / "tiny.gguf"), "--threads", "100000", "-n", "2", "-p", "hi", "--mode",
                  "resident", "--raw", timeout=120)
    assert res.returncode == 0, res.stderr[-1000:]
    assert "bad_alloc" not in res.stderr

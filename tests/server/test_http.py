"""Raw HTTP: framing (NDJSON, SSE), status codes and error bodies, CORS, true streaming, disconnects."""
from __future__ import annotations

import http.client
import json
import socket
import time

from server_support import GREEDY, MAX_BODY, MODEL


def test_root_and_version(server):
    status, _, body = server.request("GET", "/")
    assert status == 200 and body == b"Ollama is running"
    assert server.request("HEAD", "/")[0] == 200
    status, _, body = server.request("GET", "/api/version")
    version = json.loads(body)["version"]
    assert status == 200 and all(part.isdigit() for part in version.split("."))


def test_ndjson_framing(server):
    status, headers, body = server.request("POST", "/api/generate",
                                           {"model": MODEL, "prompt": "Hi", "options": GREEDY})
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines[-1]["done"] is True and all(not x["done"] for x in lines[:-1])
    final = lines[-1]
    for key in ("done_reason", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration", "context", "created_at"):
        assert key in final, key
    status, headers, body = server.request("POST", "/api/chat", {"model": MODEL, "stream": False, "options": GREEDY,
                                                                 "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["message"]["role"] == "assistant"


def test_error_codes_and_bodies(server):
    status, _, body = server.request("POST", "/api/generate", raw=b"{not json")
    assert status == 400 and "error" in json.loads(body)
    status, _, body = server.request("POST", "/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404 and json.loads(body) == {"error": "model 'nope' not found"}
    for name in ("../../etc/passwd", "/abs/path", "a/../../b", "x\\y"):
        status, _, body = server.request("POST", "/api/show", {"model": name})
        assert status == 400 and "invalid model name" in json.loads(body)["error"], name
    status, _, body = server.request("POST", "/api/embed", raw=b'{"model": "' + b"x" * (MAX_BODY + 10) + b'"}')
    assert status == 413 and json.loads(body)["error"]
    status, _, body = server.request("POST", "/api/generate", {"prompt": "x"})
    assert status == 400 and json.loads(body)["error"] == "model is required"
    status, _, body = server.request("GET", "/api/nothing-here")
    assert status == 404 and "error" in json.loads(body)
    status, _, body = server.request("POST", "/api/generate", {"model": MODEL, "prompt": "x", "keep_alive": "5 parsecs"})
    assert status == 400
    # the OpenAI family reports OpenAI's error shape
    status, _, body = server.request("POST", "/v1/chat/completions", raw=b"[")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_show_accepts_legacy_name(server):
    status, _, body = server.request("POST", "/api/show", {"name": MODEL})
    info = json.loads(body)
    assert status == 200 and info["model_info"]["gemma3.context_length"] == 32768
    assert info["details"]["family"] == "gemma3" and "parameters" in info and "modified_at" in info


def test_cors(server):
    status, headers, _ = server.request("OPTIONS", "/api/chat", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in headers["access-control-allow-methods"]
    status, headers, _ = server.request("GET", "/api/version", headers={"Origin": "app://obsidian.md"})
    assert status == 200 and headers["access-control-allow-origin"] == "app://obsidian.md"
    assert server.request("GET", "/api/version", headers={"Origin": "https://evil.example"})[0] == 403


def _stream_lines(server, path: str, body: dict) -> tuple[float, list[tuple[float, bytes]]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = []
    while line := resp.readline():
        if line.strip():
            out.append((time.perf_counter(), line))
    conn.close()
    return t0, out


def test_true_streaming_first_chunk_long_before_last(server):
    server.request("POST", "/api/generate", {"model": MODEL, "prompt": ""})   # loaded: time only generation
    t0, lines = _stream_lines(server, "/api/generate",
                              {"model": MODEL, "prompt": "Tell me a story.", "options": {"temperature": 0, "num_predict": 16}})
    assert json.loads(lines[-1][1])["eval_count"] == 16
    first, last = lines[0][0], lines[-1][0]
    assert last - first > 0.1                      # 15 decode steps lie between them (~60 tok/s here)
    assert first - t0 < (last - t0) / 2
    assert len({round(t, 3) for t, _ in lines}) > 8  # they arrived one by one, not in one burst


def test_sse_framing(server):
    _, lines = _stream_lines(server, "/v1/chat/completions", {
        "model": MODEL, "stream": True, "max_tokens": 4, "temperature": 0,
        "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "Hi"}]})
    payloads = [line.decode().strip() for _, line in lines]
    assert all(p.startswith("data: ") for p in payloads)
    assert payloads[-1] == "data: [DONE]"
    chunks = [json.loads(p[6:]) for p in payloads[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 4 and chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_client_disconnect_stops_generation(server):
    """A client that goes away mid-stream frees the model at once: the next request is not kept waiting."""
    server.request("POST", "/api/generate", {"model": MODEL, "prompt": ""})
    sock = socket.create_connection((server.host, server.port))
    body = json.dumps({"model": MODEL, "prompt": "Write a very long essay.",
                       "options": {"temperature": 0, "num_predict": 100000}}).encode()
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert b"HTTP/1.1 200" in sock.recv(4096)      # streaming has begun
    sock.close()
    t0 = time.perf_counter()
    status, _, resp = server.request("POST", "/api/generate",
                                     {"model": MODEL, "prompt": "Hi", "stream": False, "options": GREEDY})
    assert status == 200 and json.loads(resp)["done"]
    assert time.perf_counter() - t0 < 3.0           # the abandoned one (~1000 tokens, ~16 s) was cancelled


def test_prompt_longer_than_num_ctx_is_400(server):
    status, _, body = server.request("POST", "/api/generate", {
        "model": MODEL, "prompt": "word " * 400, "stream": False, "options": {"num_ctx": 32, "num_predict": 1}})
    assert status == 400 and "does not fit the context" in json.loads(body)["error"]

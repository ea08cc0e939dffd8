"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json`` (and kept in docs/openapi.json:
``python -m hypura_server.openapi > docs/openapi.json``). Request bodies list the fields the server reads
and their types; unknown fields are allowed (Ollama ignores them). Every error is a JSON body: Ollama's
``{"error": "..."}``, or OpenAI's ``{"error": {"message", "type", "param", "code"}}`` under ``/v1``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from .version import __version__

S, I, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"anyOf": [S, {"type": "object", "properties": {"message": S}}]}}}
KEEP_ALIVE = {"anyOf": [N, S], "description": "seconds, or a Go duration such as 5m; negative: forever"}
OPTIONS = {"type": "object", "description": "Ollama's model options (unknown keys ignored)", "properties": {
    "num_ctx": I, "num_predict": I, "temperature": N, "top_k": I, "top_p": N, "min_p": N, "seed": I,
    "repeat_penalty": N, "repeat_last_n": I, "presence_penalty": N, "frequency_penalty": N,
    "stop": {"anyOf": [S, {"type": "array", "items": S}]}}}
MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": S, "content": S, "thinking": S, "images": {"type": "array", "items": S}, "tool_name": S,
    "tool_calls": {"type": "array", "items": OBJ}}}
FORMAT = {"anyOf": [{"const": "json"}, OBJ], "description": "\"json\" or a JSON schema"}
TOOLS = {"type": "array", "items": OBJ}


def _body(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str, stream: str | None = None, codes: tuple[int, ...] = (400, 404)) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": OBJ}}
    if stream:
        content[stream] = {"schema": S}
    out: dict[str, Any] = {"200": {"description": ok, "content": content}}
    for code in codes:
        out[str(code)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    out["500"] = {"description": "the model failed to load or its runner crashed",
                  "content": {"application/json": {"schema": ERROR}}}
    return out


def _op(summary: str, body: dict[str, Any] | None = None, ok: str = "OK", stream: str | None = None,
        codes: tuple[int, ...] = (400, 404), params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(ok, stream, codes)}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


MODEL = {"model": S, "name": {**S, "description": "legacy spelling of model"}}
GENERATE = _body({**MODEL, "prompt": S, "suffix": S, "system": S, "template": S, "raw": B, "stream": B,
                  "format": FORMAT, "options": OPTIONS, "keep_alive": KEEP_ALIVE, "think": {"anyOf": [B, S]},
                  "context": {"type": "array", "items": I}, "images": {"type": "array", "items": S}})
CHAT = _body({**MODEL, "messages": {"type": "array", "items": MESSAGE}, "tools": TOOLS, "stream": B,
              "format": FORMAT, "options": OPTIONS, "keep_alive": KEEP_ALIVE, "think": {"anyOf": [B, S]}})
EMBED = _body({**MODEL, "input": {"anyOf": [S, {"type": "array", "items": S}]}, "truncate": B,
               "dimensions": I, "options": OPTIONS, "keep_alive": KEEP_ALIVE})
OA_MESSAGES = {"type": "array", "items": {"type": "object", "required": ["role"], "properties": {
    "role": S, "content": {"anyOf": [S, {"type": "array", "items": OBJ}, {"type": "null"}]}, "name": S,
    "tool_call_id": S, "tool_calls": {"type": "array", "items": OBJ}}}}
OA_COMMON = {"model": S, "stream": B, "temperature": N, "top_p": N, "seed": I, "max_tokens": I,
             "max_completion_tokens": I, "frequency_penalty": N, "presence_penalty": N,
             "stop": {"anyOf": [S, {"type": "array", "items": S}]}, "stream_options": OBJ}
DIGEST = {"name": "digest", "in": "path", "required": True, "schema": S, "description": "sha256:<64 hex>"}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Hypura", "version": __version__,
             "description": "Ollama- and OpenAI-compatible API of `hypura serve` (loopback-only by default, "
                            "no authentication)."},
    "paths": {
        "/": {"get": _op("liveness: `Ollama is running`", codes=())},
        "/api/version": {"get": _op("the Ollama API version served", codes=())},
        "/api/tags": {"get": _op("models that can be served", codes=())},
        "/api/ps": {"get": _op("loaded models", codes=())},
        "/api/show": {"post": _op("a model's details, template, parameters, capabilities", _body(MODEL))},
        "/api/generate": {"post": _op("generate from a prompt (NDJSON stream unless stream=false)", GENERATE,
                                      stream="application/x-ndjson")},
        "/api/chat": {"post": _op("chat (NDJSON stream unless stream=false)", CHAT, stream="application/x-ndjson")},
        "/api/embed": {"post": _op("embeddings of one or more inputs", EMBED)},
        "/api/embeddings": {"post": _op("legacy: the embedding of one prompt",
                                        _body({**MODEL, "prompt": S, "options": OPTIONS, "keep_alive": KEEP_ALIVE}))},
        "/api/create": {"post": _op("register a name for a GGUF (from a model, a server path or an uploaded blob)",
                                    _body({**MODEL, "from": S, "files": OBJ, "template": S, "system": S,
                                           "parameters": OBJ, "stream": B}))},
        "/api/copy": {"post": _op("copy a name", _body({"source": S, "destination": S}, ("source", "destination")))},
        "/api/delete": {"delete": _op("delete a name (a file only inside Hypura's models directory)", _body(MODEL))},
        "/api/pull": {"post": _op("pull (Hypura does not download: succeeds for models it has)",
                                  _body({**MODEL, "insecure": B, "stream": B}))},
        "/api/push": {"post": _op("push (not supported: 501)", _body({**MODEL, "insecure": B, "stream": B}),
                                  codes=(400, 404, 501))},
        "/api/blobs/{digest}": {
            "head": _op("whether a blob exists", params=[DIGEST]),
            "post": _op("upload a blob (its sha256 is checked)", {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, params=[DIGEST])},
        "/v1/chat/completions": {"post": _op("OpenAI chat completions (SSE when stream=true)", _body(
            {**OA_COMMON, "messages": OA_MESSAGES, "tools": TOOLS, "tool_choice": {"anyOf": [S, OBJ]},
             "response_format": OBJ}, ("model", "messages")), stream="text/event-stream")},
        "/v1/completions": {"post": _op("OpenAI completions (SSE when stream=true)", _body(
            {**OA_COMMON, "prompt": {"anyOf": [S, {"type": "array", "items": S}]}, "suffix": S}, ("model",)),
            stream="text/event-stream")},
        "/v1/models": {"get": _op("OpenAI model list", codes=())},
        "/v1/models/{name}": {"get": _op("one OpenAI model", params=[
            {"name": "name", "in": "path", "required": True, "schema": S}])},
        "/v1/embeddings": {"post": _op("OpenAI embeddings", _body(
            {"model": S, "input": {"anyOf": [S, {"type": "array", "items": S}]}, "encoding_format": S,
             "dimensions": I}, ("model", "input")))},
        "/openapi.json": {"get": _op("this document", codes=())},
    },
}


def main() -> int:
    json.dump(SPEC, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

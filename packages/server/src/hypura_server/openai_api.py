"""OpenAI-compatible endpoints under /v1: chat/completions, completions, models, embeddings.

The same jobs as the Ollama API (one engine path); errors use OpenAI's shape (see app.error_body)
and streams are SSE ending with ``data: [DONE]``.
"""
from __future__ import annotations

import base64
import json
import secrets
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from flask import Blueprint, Response, jsonify, request

from .durations import parse_keep_alive
from .embeddings import check_inputs, embed_texts, normalise
from .errors import bad_request, field, json_body, model_name
from .grammar import format_grammar
from .jobs import (Delta, Done, Job, Prompt, Started, check_features, check_messages, check_template, check_tools,
                   collect, render, template_for)
from .modelinfo import read_info
from .state import options, resolve, state
from .streams import sse

if TYPE_CHECKING:   # the engine's Runner interface; models run in worker processes (no native code here)
    from hypura_engine import Runner

bp = Blueprint("openai", __name__, url_prefix="/v1")
FINGERPRINT = "fp_hypura"


def _ollama_options(body: dict[str, Any], default_max_tokens: int | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop"):
        if body.get(key) is not None:
            opts[key] = body[key]
    limit = body.get("max_completion_tokens", body.get("max_tokens", default_max_tokens))
    if limit is not None:
        opts["num_predict"] = limit
    return {"options": opts, "keep_alive": body.get("keep_alive")}


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage), checked."""
    stream = field(body, "stream", bool, False)
    stream_options = field(body, "stream_options", dict, {})
    return stream, bool(stream_options.get("include_usage"))


def _grammar(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise bad_request("response_format must be an object")
    kind = fmt.get("type")
    try:
        if kind == "json_object":
            return format_grammar("json")
        if kind == "json_schema":
            return format_grammar((fmt.get("json_schema") or {}).get("schema") or {"type": "object"})
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if kind in (None, "text"):
        return None
    raise bad_request(f"unsupported response_format type {kind!r}")


def _text(content: Any) -> str:
    """OpenAI message content (a string or a list of parts) → text; images → 400."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                raise bad_request("only text content parts are supported (Hypura serves text-only models)")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise bad_request("message content must be a string or a list of parts")


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list")
    check_messages(raw)
    out = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request("each message must be an object with a role")
        msg: dict[str, Any] = {"role": "system" if m["role"] == "developer" else m["role"],
                               "content": _text(m.get("content"))}
        calls = []
        raw_calls = m.get("tool_calls") or []
        if not isinstance(raw_calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in raw_calls):
            raise bad_request("tool_calls must be a list of objects, each with a function object")
        for call in raw_calls:
            fn = dict(call.get("function") or {})
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"] or "{}")
                except ValueError:
                    raise bad_request("tool call arguments must be JSON") from None
            calls.append({"function": fn})
        if calls:
            msg["tool_calls"] = calls
        for key in ("name", "tool_call_id"):
            if m.get(key):
                msg[key] = m[key]
        out.append(msg)
    return out


def _usage(done: Done) -> dict[str, Any]:
    """OpenAI's usage; with a draft, its Predicted Outputs counts say what the draft did (drafted tokens the
    target accepted and rejected), and ``speculative`` carries the whole report, as Ollama's final chunk does."""
    r = done.result
    out: dict[str, Any] = {"prompt_tokens": r.prompt_total, "completion_tokens": r.eval_tokens,
                           "total_tokens": r.prompt_total + r.eval_tokens}
    spec = r.speculative
    if spec is not None:
        accepted = int(spec.get("accepted", 0))
        out["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": int(spec.get("drafted", 0)) - accepted}
        out["speculative"] = spec
    return out


def _oa_calls(calls: list[dict[str, Any]] | None, stream: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls or []):
        item = {"id": "call_" + secrets.token_hex(8), "type": "function",
                "function": {"name": call["function"]["name"],
                             "arguments": json.dumps(call["function"]["arguments"], ensure_ascii=False)}}
        out.append({"index": i, **item} if stream else item)
    return out


def _finish(done: Done) -> str:
    if done.tool_calls:
        return "tool_calls"
    return "length" if done.result.done_reason == "length" else "stop"


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = json_body()
    entry = resolve(model_name(body, "model"))
    messages = _messages(body.get("messages"))
    tools = check_tools(field(body, "tools", list, []))
    if body.get("tool_choice") == "none":
        tools = None
    effort = body.get("reasoning_effort")
    think = None if effort is None else effort != "none"
    ob = _ollama_options(body)
    opts, num_ctx = options(ob, _grammar(body), state().overrides(entry.name).get("parameters"))
    keep = parse_keep_alive(ob["keep_alive"], state().settings.keep_alive)
    over = state().overrides(entry.name)
    check_template(over.get("template"))
    if over.get("system") and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": over["system"]}] + messages

    def build(runner: Runner) -> Prompt:
        template = template_for(runner, over.get("template"))
        check_features(entry.name, template, tools, think)
        return render(runner, template, messages, tools=tools, think=think)

    stream, usage = _stream_flags(body)     # before the lease: a bad value must not leave the model held
    started = Started(state().manager, Job(entry, build, opts, num_ctx, keep, tools, think), threading.Event(),
                      request.environ)
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": entry.name,
            "system_fingerprint": FINGERPRINT}
    if stream:

        def events() -> Iterator[dict[str, Any]]:
            for ev in started.events():
                if isinstance(ev, Delta):
                    delta: dict[str, Any] = {"role": "assistant", "content": ev.content}
                    if ev.thinking:
                        delta["reasoning"] = ev.thinking
                    yield {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                else:
                    delta = {"role": "assistant", "content": ""}
                    if ev.tool_calls:
                        delta["tool_calls"] = _oa_calls(ev.tool_calls, stream=True)
                    yield {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": _finish(ev)}]}
                    if usage:
                        yield {**head, "choices": [], "usage": _usage(ev)}
        return sse(events(), started.close)
    text, thinking, done = collect(started)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["reasoning"] = thinking
    if done.tool_calls:
        message["tool_calls"] = _oa_calls(done.tool_calls)
    return jsonify({**head, "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": _finish(done)}],
                    "usage": _usage(done)})


@bp.post("/completions")
def completions() -> Response:
    body = json_body()
    entry = resolve(model_name(body, "model"))
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("prompt must be a string")
    ob = _ollama_options(body, default_max_tokens=16)   # OpenAI's default for /v1/completions
    opts, num_ctx = options(ob, None, state().overrides(entry.name).get("parameters"))
    keep = parse_keep_alive(ob["keep_alive"], state().settings.keep_alive)
    over = state().overrides(entry.name)
    check_template(over.get("template"))

    def build(runner: Runner) -> Prompt:
        msgs = ([{"role": "system", "content": over["system"]}] if over.get("system") else [])
        return render(runner, template_for(runner, over.get("template")), msgs + [{"role": "user", "content": prompt}])

    stream, usage = _stream_flags(body)     # before the lease: a bad value must not leave the model held
    started = Started(state().manager, Job(entry, build, opts, num_ctx, keep), threading.Event(), request.environ)
    head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": entry.name, "system_fingerprint": FINGERPRINT}
    if stream:

        def events() -> Iterator[dict[str, Any]]:
            for ev in started.events():
                if isinstance(ev, Delta):
                    yield {**head, "choices": [{"text": ev.content, "index": 0, "logprobs": None,
                                                "finish_reason": None}]}
                else:
                    yield {**head, "choices": [{"text": "", "index": 0, "logprobs": None,
                                                "finish_reason": _finish(ev)}]}
                    if usage:
                        yield {**head, "choices": [], "usage": _usage(ev)}
        return sse(events(), started.close)
    text, _, done = collect(started)
    return jsonify({**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                         "finish_reason": _finish(done)}], "usage": _usage(done)})


def _model_object(name: str, mtime: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(mtime), "owned_by": "library"}


@bp.get("/models")
def models() -> Response:
    data = []
    for entry in state().registry.list():
        try:
            data.append(_model_object(entry.name, read_info(entry.path).mtime))
        except (OSError, ValueError):
            continue
    return jsonify({"object": "list", "data": data})


@bp.get("/models/<path:name>")
def model(name: str) -> Response:
    entry = resolve(name)
    return jsonify(_model_object(entry.name, entry.path.stat().st_mtime))


@bp.post("/embeddings")
def embeddings() -> Response:
    body = json_body()
    entry = resolve(model_name(body, "model"))
    inputs = body.get("input")
    if not isinstance(inputs, str) and not (isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs)):
        raise bad_request("input must be a string or a non-empty list of strings (token arrays are not supported)")
    texts = check_inputs([inputs] if isinstance(inputs, str) else inputs)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("encoding_format must be float or base64")
    dims = field(body, "dimensions", int)
    if dims is not None and dims < 1:
        raise bad_request("dimensions must be a positive integer")
    keep = parse_keep_alive(body.get("keep_alive"), state().settings.keep_alive)
    vectors, count, _ = embed_texts(entry, texts, True, None, keep)
    if dims:
        vectors = [normalise(v[:dims]) for v in vectors]
    data = []
    for i, v in enumerate(vectors):
        emb: Any = v if encoding == "float" else base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        data.append({"object": "embedding", "embedding": emb, "index": i})
    return jsonify({"object": "list", "data": data, "model": entry.name,
                    "usage": {"prompt_tokens": count, "total_tokens": count}})

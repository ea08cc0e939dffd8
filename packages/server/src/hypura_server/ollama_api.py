"""Ollama's generation endpoints: /api/generate, /api/chat, /api/embed, /api/embeddings."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flask import Blueprint, Response, jsonify, request

from hypura_engine import ModelEntry

from .durations import now_rfc3339, parse_keep_alive
from .embeddings import check_inputs, embed_texts, normalise
from .errors import bad_request, field, json_body, model_name
from .grammar import format_grammar
from .jobs import (Delta, Done, Job, Prompt, Started, check_features, check_messages, check_template, check_tools,
                   collect, leased, render, template_for, tokenize)
from .state import options, resolve, state
from .streams import ndjson

if TYPE_CHECKING:   # the engine's Runner interface; models run in worker processes (no native code here)
    from hypura_engine import Runner

bp = Blueprint("ollama", __name__)


def stats(done: Done) -> dict[str, Any]:
    r = done.result
    return {"done": True, "done_reason": r.done_reason if r.done_reason != "aborted" else "stop",
            "total_duration": done.total_ns, "load_duration": done.load_ns,
            "prompt_eval_count": r.prompt_total, "prompt_eval_duration": r.prompt_ns,
            "eval_count": r.eval_tokens, "eval_duration": r.eval_ns + r.sample_ns,
            **({"speculative": r.speculative} if r.speculative is not None else {})}


def _common(body: dict[str, Any], entry: ModelEntry) -> dict[str, Any]:
    """keep_alive, format → grammar, options (over the name's stored parameters), think."""
    st = state()
    over = st.overrides(entry.name)
    try:
        grammar = format_grammar(body.get("format"))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    opts, num_ctx = options(body, grammar, over.get("parameters"))
    think = body.get("think")
    if think is not None and not isinstance(think, (bool, str)):
        raise bad_request("think must be a boolean or one of high, medium, low")
    check_template(over.get("template"))
    return {"keep_alive": parse_keep_alive(body.get("keep_alive"), st.settings.keep_alive), "opts": opts,
            "num_ctx": num_ctx, "think": None if think is None else bool(think), "over": over}


def _load_only(entry: ModelEntry, c: dict[str, Any], chat: bool) -> Response:
    """An empty prompt: load the model (or, with keep_alive 0, unload it)."""
    st = state()
    if c["keep_alive"] == 0:
        st.manager.unload(entry.name)
        reason = "unload"
    else:
        with leased(st.manager, entry, c["num_ctx"], c["keep_alive"], request.environ):
            reason = "load"
    out: dict[str, Any] = {"model": entry.name, "created_at": now_rfc3339()}
    out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    out.update({"done": True, "done_reason": reason})
    return jsonify(out)


def _no_images(items: Any) -> None:
    if items:
        raise bad_request("this model does not support images: Hypura serves text-only models")


@bp.post("/api/generate")
def generate() -> Response:
    body = json_body()
    entry = resolve(model_name(body))
    c = _common(body, entry)
    prompt = field(body, "prompt", str, "")
    suffix = field(body, "suffix", str, "")
    system = field(body, "system", str, c["over"].get("system"))
    context = field(body, "context", list, [])
    raw = field(body, "raw", bool, False)
    template_override = field(body, "template", str, c["over"].get("template"))
    check_template(template_override)
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in context):
        raise bad_request("context must be a list of token ids")
    _no_images(body.get("images"))
    if not prompt and not suffix and not context:
        return _load_only(entry, c, chat=False)

    def build(runner: Runner) -> Prompt:
        template = template_for(runner, template_override)
        check_features(entry.name, template, None, c["think"])
        if suffix:
            return _fim(runner, prompt, suffix)
        if raw:
            return Prompt(list(context) + tokenize(runner, prompt, add_special=not context))
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return render(runner, template, messages, think=c["think"], context=context)

    stream = field(body, "stream", bool, True)   # before the lease: a bad value must not leave the model held
    started = Started(state().manager, Job(entry, build, c["opts"], c["num_ctx"], c["keep_alive"], None, c["think"]),
                      threading.Event(), request.environ)

    def chunk(extra: dict[str, Any]) -> dict[str, Any]:
        return {"model": entry.name, "created_at": now_rfc3339(), **extra}

    def final(done: Done, text: str = "", thinking: str = "") -> dict[str, Any]:
        extra: dict[str, Any] = {"response": text}
        if thinking:
            extra["thinking"] = thinking
        return chunk({**extra, **stats(done), "context": done.context})

    if stream:
        def events() -> Iterator[dict[str, Any]]:
            for ev in started.events():
                if isinstance(ev, Delta):
                    yield chunk({"response": ev.content, **({"thinking": ev.thinking} if ev.thinking else {}),
                                 "done": False})
                else:
                    yield final(ev)
        return ndjson(events(), started.close)
    return jsonify(_collect(started, final))


def _collect(started: Started, final: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    text, thinking, done = collect(started)
    return final(done, text, thinking)


def _fim(runner: Runner, prompt: str, suffix: str) -> Prompt:
    meta = runner.metadata
    try:
        pre, suf, mid = (int(meta[f"tokenizer.ggml.fim_{k}_token_id"]) for k in ("pre", "suf", "mid"))
    except (KeyError, ValueError):
        raise bad_request(f"{runner.name} does not support insert") from None
    return Prompt([pre] + tokenize(runner, prompt, add_special=False) + [suf]
                  + tokenize(runner, suffix, add_special=False) + [mid])


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = field(body, "messages", list, [])
    check_messages(messages)
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request("each message must be an object with a role")
        if m.get("content") is not None and not isinstance(m["content"], str):
            raise bad_request("message content must be a string")
        _no_images(m.get("images"))
        m = dict(m)
        if m["role"] == "tool" and m.get("tool_name") and not m.get("name"):
            m["name"] = m["tool_name"]
        out.append(m)
    return out


@bp.post("/api/chat")
def chat() -> Response:
    body = json_body()
    entry = resolve(model_name(body))
    c = _common(body, entry)
    messages = _messages(body)
    tools = check_tools(field(body, "tools", list, []))
    if not messages:
        return _load_only(entry, c, chat=True)
    system = c["over"].get("system")
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages

    def build(runner: Runner) -> Prompt:
        template = template_for(runner, c["over"].get("template"))
        check_features(entry.name, template, tools, c["think"])
        return render(runner, template, messages, tools=tools, think=c["think"])

    stream = field(body, "stream", bool, True)   # before the lease: a bad value must not leave the model held
    started = Started(state().manager, Job(entry, build, c["opts"], c["num_ctx"], c["keep_alive"], tools,
                                           c["think"]), threading.Event(), request.environ)

    def message(content: str, thinking: str = "", tool_calls: list | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            msg["thinking"] = thinking
        if tool_calls:
            msg["tool_calls"] = tool_calls
        return msg

    def final(done: Done, text: str = "", thinking: str = "") -> dict[str, Any]:
        return {"model": entry.name, "created_at": now_rfc3339(),
                "message": message(text, thinking, done.tool_calls), **stats(done)}

    if stream:
        def events() -> Iterator[dict[str, Any]]:
            for ev in started.events():
                if isinstance(ev, Delta):
                    yield {"model": entry.name, "created_at": now_rfc3339(),
                           "message": message(ev.content, ev.thinking), "done": False}
                else:
                    yield final(ev)
        return ndjson(events(), started.close)
    return jsonify(_collect(started, final))


@bp.post("/api/embed")
def embed() -> Response:
    t0 = time.perf_counter_ns()
    body = json_body()
    entry = resolve(model_name(body))
    inputs = body.get("input", [])
    texts = check_inputs([inputs] if isinstance(inputs, str) else inputs)
    dims = field(body, "dimensions", int)
    if dims is not None and dims < 0:
        raise bad_request("dimensions must be positive")
    _, num_ctx = options(body)
    keep = parse_keep_alive(body.get("keep_alive"), state().settings.keep_alive)
    truncate = field(body, "truncate", bool, True)
    if not texts:
        with leased(state().manager, entry, num_ctx, keep, request.environ):
            return jsonify({"model": entry.name, "embeddings": []})
    vectors, count, load_ns = embed_texts(entry, texts, truncate, num_ctx, keep)
    if dims:
        if dims < 1 or dims > len(vectors[0]):
            raise bad_request(f"dimensions must be between 1 and {len(vectors[0])}")
        vectors = [normalise(v[:dims]) for v in vectors]
    return jsonify({"model": entry.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - t0,
                    "load_duration": load_ns, "prompt_eval_count": count})


@bp.post("/api/embeddings")
def embeddings() -> Response:
    """The legacy endpoint: one ``prompt`` → ``{"embedding": [...]}``."""
    body = json_body()
    entry = resolve(model_name(body))
    _, num_ctx = options(body)
    keep = parse_keep_alive(body.get("keep_alive"), state().settings.keep_alive)
    prompt = field(body, "prompt", str, "")
    if not prompt:
        return jsonify({"embedding": []})
    vectors, _, _ = embed_texts(entry, [prompt], True, num_ctx, keep)
    return jsonify({"embedding": vectors[0]})

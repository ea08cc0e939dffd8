"""Ollama's generation endpoints: /api/generate, /api/chat, /api/embed, /api/embeddings."""
from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context

from hypura_engine import ModelEntry

from .durations import now_rfc3339, parse_keep_alive
from .errors import APIError, bad_request, field, json_body, model_name
from .grammar import format_grammar
from .jobs import Delta, Done, Job, Prompt, Started, acquire, check_features, render, template_for
from .state import options, resolve, state

if TYPE_CHECKING:   # the engine's Runner interface; models run in worker processes (no native code here)
    from hypura_engine import Runner

bp = Blueprint("ollama", __name__)


def ndjson(chunks: Iterator[dict[str, Any]], close: Callable[[], None]) -> Response:
    """Stream `chunks` as NDJSON; an error after the first byte becomes an ``{"error"}`` line."""
    def body() -> Iterator[str]:
        try:
            for chunk in chunks:
                yield json.dumps(chunk, ensure_ascii=False) + "\n"
        except APIError as exc:
            yield json.dumps({"error": exc.message}) + "\n"
        except Exception as exc:  # the status line is sent: report in-band, as Ollama does
            yield json.dumps({"error": str(exc) or type(exc).__name__}) + "\n"
        finally:
            close()
    resp = Response(stream_with_context(body()), mimetype="application/x-ndjson")
    resp.call_on_close(close)
    return resp


def stats(done: Done) -> dict[str, Any]:
    r = done.result
    return {"done": True, "done_reason": r.done_reason if r.done_reason != "aborted" else "stop",
            "total_duration": done.total_ns, "load_duration": done.load_ns,
            "prompt_eval_count": r.prompt_total, "prompt_eval_duration": r.prompt_ns,
            "eval_count": r.eval_tokens, "eval_duration": r.eval_ns + r.sample_ns}


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
    return {"keep_alive": parse_keep_alive(body.get("keep_alive"), st.settings.keep_alive), "opts": opts,
            "num_ctx": num_ctx, "think": None if think is None else bool(think), "over": over}


def _load_only(entry: ModelEntry, c: dict[str, Any], chat: bool) -> Response:
    """An empty prompt: load the model (or, with keep_alive 0, unload it)."""
    st = state()
    if c["keep_alive"] == 0:
        st.manager.unload(entry.name)
        reason = "unload"
    else:
        lease, unwatch = acquire(st.manager, entry, c["num_ctx"], threading.Event(), request.environ)
        lease.release(c["keep_alive"])
        unwatch()
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
            return Prompt(list(context) + runner.tokenize(prompt, add_special=not context))
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
    text, thinking = [], []
    try:
        for ev in started.events():
            if isinstance(ev, Delta):
                text.append(ev.content)
                thinking.append(ev.thinking)
            else:
                return final(ev, "".join(text), "".join(thinking))
    finally:
        started.close()
    raise APIError(500, "generation ended without a result")


def _fim(runner: Runner, prompt: str, suffix: str) -> Prompt:
    meta = runner.metadata
    try:
        pre, suf, mid = (int(meta[f"tokenizer.ggml.fim_{k}_token_id"]) for k in ("pre", "suf", "mid"))
    except (KeyError, ValueError):
        raise bad_request(f"{runner.name} does not support insert") from None
    return Prompt([pre] + runner.tokenize(prompt, add_special=False) + [suf]
                  + runner.tokenize(suffix, add_special=False) + [mid])


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = field(body, "messages", list, [])
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
    tools = field(body, "tools", list, []) or None
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


def embed_texts(entry: ModelEntry, texts: list[str], truncate: bool, num_ctx: int | None,
                keep_alive: float | None) -> tuple[list[list[float]], int, int]:
    """Embeddings of `texts` → (vectors, prompt tokens, load_ns). Too long with truncate off → 400."""
    st = state()
    lease, unwatch = acquire(st.manager, entry, num_ctx, threading.Event(), request.environ)
    try:
        runner = lease.runner
        limit = min(runner.n_ctx, runner.n_batch) - 1
        vectors, count = [], 0
        for text in texts:
            n = len(runner.tokenize(text))
            if n > limit and not truncate:
                raise bad_request(f"input of {n} tokens exceeds the context length of {limit} tokens")
            count += min(n, limit)
            vectors.append(runner.embed(text))
        return vectors, count, lease.load_ns
    finally:
        lease.release(keep_alive)
        unwatch()


@bp.post("/api/embed")
def embed() -> Response:
    t0 = time.perf_counter_ns()
    body = json_body()
    entry = resolve(model_name(body))
    inputs = body.get("input", [])
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise bad_request("input must be a string or a list of strings")
    dims = field(body, "dimensions", int)
    _, num_ctx = options(body)
    keep = parse_keep_alive(body.get("keep_alive"), state().settings.keep_alive)
    if not texts:
        lease, unwatch = acquire(state().manager, entry, num_ctx, threading.Event(), request.environ)
        lease.release(keep)
        unwatch()
        return jsonify({"model": entry.name, "embeddings": []})
    vectors, count, load_ns = embed_texts(entry, texts, field(body, "truncate", bool, True), num_ctx, keep)
    if dims:
        if dims < 1 or dims > len(vectors[0]):
            raise bad_request(f"dimensions must be between 1 and {len(vectors[0])}")
        vectors = [_normalise(v[:dims]) for v in vectors]
    return jsonify({"model": entry.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - t0,
                    "load_duration": load_ns, "prompt_eval_count": count})


def _normalise(v: list[float]) -> list[float]:
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


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

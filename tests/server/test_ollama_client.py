"""The real `ollama` Python client against the real server."""
from __future__ import annotations

import json
import math

import ollama
import pytest

from server_support import GREEDY, MODEL

PROMPT = "Why is the sky blue?"


def test_list_has_the_default_model_with_details(ollama_client):
    models = {m.model: m for m in ollama_client.list().models}
    m = models[MODEL]
    assert m.size > 100e6 and len(m.digest) == 64
    assert m.details.format == "gguf" and m.details.family == "gemma3"
    assert m.details.quantization_level == "Q4_K_M" and m.details.parameter_size


def test_show(ollama_client):
    info = ollama_client.show(MODEL)
    assert info.modelinfo["gemma3.context_length"] == 32768
    assert info.modelinfo["general.architecture"] == "gemma3"
    assert "completion" in info.capabilities and "tools" not in info.capabilities
    assert "<start_of_turn>" in info.template
    assert info.details.family == "gemma3"


def test_generate_streamed_equals_unstreamed(ollama_client):
    whole = ollama_client.generate(MODEL, PROMPT, options=GREEDY)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 8
    assert whole.response and whole.context and len(whole.context) > whole.eval_count
    assert whole.total_duration >= whole.prompt_eval_duration > 0 and whole.eval_duration > 0
    assert whole.prompt_eval_count > 5
    chunks = list(ollama_client.generate(MODEL, PROMPT, options=GREEDY, stream=True))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert chunks[-1].eval_count == 8 and chunks[-1].done_reason == "length"
    assert "".join(c.response for c in chunks) == whole.response


def test_generate_context_continues(ollama_client):
    first = ollama_client.generate(MODEL, "Count: one, two,", options=GREEDY, raw=True)
    second = ollama_client.generate(MODEL, " five", context=first.context, options=GREEDY, raw=True)
    assert second.context[: len(first.context)] == first.context


def test_chat_streamed_equals_unstreamed(ollama_client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    whole = ollama_client.chat(MODEL, messages, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content and whole.done
    parts = list(ollama_client.chat(MODEL, messages, options=GREEDY, stream=True))
    assert parts[-1].done and parts[-1].eval_count == 8
    assert "".join(p.message.content for p in parts) == whole.message.content
    # the next turn reuses the cached prefix: it is evaluated faster than from scratch
    follow = messages + [{"role": "assistant", "content": whole.message.content}, {"role": "user", "content": "Another."}]
    again = ollama_client.chat(MODEL, follow, options=GREEDY)
    assert again.done and again.message.content


def test_format_json_schema_constrains_output(ollama_client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    r = ollama_client.generate(MODEL, "Is water wet? Answer in JSON.", format=schema,
                               options={"temperature": 0, "num_predict": 24})  # ends by itself at ~17
    assert json.loads(r.response)["answer"] in ("yes", "no")
    assert r.done_reason == "stop"


def test_format_json_with_repeat_penalty(ollama_client):
    """Ollama clients send repeat_penalty (Ollama's default is 1.1) with format: the prompt feeds the
    penalties, never the grammar (which would reject it and abort the worker)."""
    for last_n in (64, 0, -1):
        r = ollama_client.generate(MODEL, "Give me a person as JSON.", format="json",
                                   options={"temperature": 0, "num_predict": 24, "repeat_penalty": 1.1,
                                            "repeat_last_n": last_n})
        assert r.done and r.response.lstrip().startswith("{")


def test_embed(ollama_client):
    r = ollama_client.embed(MODEL, ["hello world", "the sky is blue"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 640
    assert math.isclose(sum(x * x for x in r.embeddings[0]), 1.0, rel_tol=1e-4)
    assert r.embeddings[0] != r.embeddings[1] and r.prompt_eval_count >= 4
    legacy = ollama_client.embeddings(MODEL, "hello world")
    assert legacy.embedding == pytest.approx(r.embeddings[0], abs=1e-6)


def test_ps_then_keep_alive_zero_unloads(ollama_client):
    ollama_client.generate(MODEL, "Hi", options={"temperature": 0, "num_predict": 1})
    running = {m.model: m for m in ollama_client.ps().models}
    assert MODEL in running
    assert running[MODEL].size > 0 and running[MODEL].context_length == 1024
    unloaded = ollama_client.generate(MODEL, "", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert MODEL not in {m.model for m in ollama_client.ps().models}
    loaded = ollama_client.generate(MODEL, "")
    assert loaded.done_reason == "load" and MODEL in {m.model for m in ollama_client.ps().models}
    r = ollama_client.generate(MODEL, "Hi", options={"temperature": 0, "num_predict": 2}, keep_alive=0)
    assert r.done and MODEL not in {m.model for m in ollama_client.ps().models}


def test_num_ctx_reloads_and_clamps(ollama_client):
    ollama_client.generate(MODEL, "Hi", options={"temperature": 0, "num_predict": 1, "num_ctx": 512})
    assert {m.model: m for m in ollama_client.ps().models}[MODEL].context_length == 512
    for huge in (10**7, 2**40, 1e300):   # clamped to the model's maximum, not an error
        ollama_client.generate(MODEL, "", options={"num_ctx": huge})
        assert {m.model: m for m in ollama_client.ps().models}[MODEL].context_length == 32768
    ollama_client.generate(MODEL, "", keep_alive=0)


def test_unknown_model_is_404(ollama_client):
    for call in (lambda: ollama_client.chat("no-such-model", [{"role": "user", "content": "x"}]),
                 lambda: ollama_client.generate("no-such-model:7b", "x"),
                 lambda: ollama_client.show("no-such-model"),
                 lambda: ollama_client.embed("no-such-model", "x")):
        with pytest.raises(ollama.ResponseError) as exc:
            call()
        assert exc.value.status_code == 404 and "not found" in exc.value.error


def test_unsupported_features_are_400(ollama_client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(ollama.ResponseError, match="does not support tools") as exc:
        ollama_client.chat(MODEL, [{"role": "user", "content": "x"}], tools=[tool])
    assert exc.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        ollama_client.chat(MODEL, [{"role": "user", "content": "x"}], think=True)
    with pytest.raises(ollama.ResponseError, match="images") as exc:
        ollama_client.generate(MODEL, "what is this?", images=[b"\x89PNG..."])
    assert exc.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as exc:
        ollama_client.generate(MODEL, "x", options={"temperature": "hot"})
    assert exc.value.status_code == 400
    chat = ollama_client.chat(MODEL, [{"role": "user", "content": "Hi"}], tools=[],
                              options={"temperature": 0, "num_predict": 2})
    assert chat.done  # tools: [] means no tools


def test_create_copy_delete_pull(ollama_client, server, default_model):
    ollama_client.create("Mini", from_=str(default_model), system="Answer in French.",
                         parameters={"temperature": 0, "num_predict": 4})
    names = {m.model for m in ollama_client.list().models}
    assert "mini:latest" in names
    shown = ollama_client.show("mini")
    assert "Answer in French." in shown.modelfile and "temperature" in shown.parameters
    r = ollama_client.generate("mini", "Hello")
    assert r.eval_count == 4                  # the stored parameters apply
    ollama_client.copy("mini", "mini-copy:v2")
    assert "mini-copy:v2" in {m.model for m in ollama_client.list().models}
    ollama_client.delete("mini-copy:v2")
    ollama_client.delete("mini")
    assert not {"mini:latest", "mini-copy:v2"} & {m.model for m in ollama_client.list().models}
    assert default_model.is_file()            # the user's file is never deleted
    with pytest.raises(ollama.ResponseError) as exc:
        ollama_client.delete("mini")
    assert exc.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as exc:
        ollama_client.delete(MODEL)            # the embedded default is not Hypura's to delete
    assert exc.value.status_code == 400
    assert ollama_client.pull(MODEL).status == "success"
    with pytest.raises(ollama.ResponseError, match="cannot reach a model registry") as exc:
        ollama_client.pull("llama3:70b")
    assert exc.value.status_code == 404


def test_create_from_uploaded_blob(ollama_client, tmp_path):
    import hashlib


    # a blob that is not a GGUF is stored, but creating a model from it is refused
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file" * 100)
    digest = ollama_client.create_blob(junk)
    assert digest == "sha256:" + hashlib.sha256(junk.read_bytes()).hexdigest()
    with pytest.raises(ollama.ResponseError, match="GGUF") as exc:
        ollama_client.create("junk", files={"junk.gguf": digest})
    assert exc.value.status_code == 400


def test_ollama_store_models_are_listed(ollama_client, server, default_model):
    blob = server.ollama_dir / "blobs" / ("sha256-" + "ab" * 32)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.symlink_to(default_model)
    manifest = server.ollama_dir / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": "sha256:" + "ab" * 32}]}))
    listed = {m.model: m for m in ollama_client.list().models}
    assert listed["tiny:q4"].digest == "ab" * 32
    assert ollama_client.show("tiny:q4").modelinfo["general.architecture"] == "gemma3"
    with pytest.raises(ollama.ResponseError):
        ollama_client.delete("tiny:q4")      # read-only: Ollama's store is never touched
    assert blob.exists()


CHATML_TOOLS = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% for c in m.get('tool_calls') or [] %}<tool_call>{{ c['function'] | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_tool_calls_end_to_end(ollama_client, default_model):
    """A template with tools, and a reply forced (by a schema) into a call: arguments come back as objects."""
    ollama_client.create("toolish", from_=str(default_model), template=CHATML_TOOLS)
    assert "tools" in ollama_client.show("toolish").capabilities
    tool = {"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}
    schema = {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}}}}
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    try:
        r = ollama_client.chat("toolish", messages, tools=[tool], format=schema,
                               options={"temperature": 0, "num_predict": 40})
        assert r.message.content == ""
        (call,) = r.message.tool_calls
        assert call.function.name == "get_weather" and call.function.arguments["city"] in ("Paris", "Oslo")
        # the call and its result go back into the history as objects
        history = messages + [r.message, {"role": "tool", "content": "22 C", "tool_name": "get_weather"}]
        again = ollama_client.chat("toolish", history, tools=[tool], options={"temperature": 0, "num_predict": 2})
        assert again.done
    finally:
        ollama_client.delete("toolish")


def test_concurrent_requests_queue_fairly_and_match_sequential(ollama_client, server):
    import concurrent.futures as cf

    prompts = ["Name a river.", "Name a mountain.", "Name a city."]
    alone = [ollama_client.generate(MODEL, p, options=GREEDY).response for p in prompts]
    with cf.ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda p: ollama_client.generate(MODEL, p, options=GREEDY).response, prompts))
    assert together == alone


def test_keep_alive_duration_expires(ollama_client):
    import time

    ollama_client.generate(MODEL, "", keep_alive="1s")
    (m,) = [m for m in ollama_client.ps().models if m.model == MODEL]
    assert m.expires_at.timestamp() - time.time() < 1.5
    deadline = time.time() + 5
    while MODEL in {m.model for m in ollama_client.ps().models} and time.time() < deadline:
        time.sleep(0.1)
    assert MODEL not in {m.model for m in ollama_client.ps().models}

"""Speculative decoding per model in `hypura serve`: a server whose configuration gives gemma3:270m the ngram
draft streams the same greedy text as the plain session server, its final chunk carries the draft's figures,
num_predict and stop behave as without a draft, and a draft with another vocabulary is a clear load error."""
from __future__ import annotations

import json
import threading

import pytest
from server_support import MODEL, Server

from hypura_synthetic import write_synthetic

PROMPT = ("Repeat this list exactly: apples, pears, plums, cherries, apples, pears, plums, cherries, apples, "
          "pears, plums, cherries")


def _start(tmp_path_factory, drafts, draft_max=None):
    from hypura_server import Settings, create_app, make_server

    settings = Settings(models_dir=tmp_path_factory.mktemp("models"), ollama_dir=tmp_path_factory.mktemp("ollama"),
                        ctx=1024, drafts=drafts, draft_max=draft_max)
    app = create_app(settings)
    srv = make_server(app, "127.0.0.1", 0, threads=4)
    threading.Thread(target=srv.run, daemon=True).start()
    return srv, app, Server("127.0.0.1", srv.effective_port, settings.models_dir, settings.ollama_dir, app)


@pytest.fixture(scope="module")
def drafted(tmp_path_factory):
    from hypura_server.drafts import check_drafts

    bad = write_synthetic(tmp_path_factory.mktemp("bad") / "bad.gguf", "llama3-70b", layers=1, scale=16,
                          vocab=512, qtype="Q4_0")
    srv, app, server = _start(tmp_path_factory, check_drafts({"gemma3:270m": "ngram", "other:latest": str(bad)}))
    yield server
    srv.close()
    app.extensions["hypura"].manager.close()


def _generate(server, **options):
    body = {"model": MODEL, "prompt": PROMPT, "stream": True, "options": {"temperature": 0, **options}}
    status, _, raw = server.request("POST", "/api/generate", body)
    assert status == 200, raw[:300]
    chunks = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return "".join(c.get("response", "") for c in chunks), chunks[-1]


@pytest.mark.parametrize("options", [{"num_predict": 40}, {"num_predict": 60, "stop": ["cherries, apples"]},
                                     {"num_predict": 3}])
def test_same_stream_as_without_a_draft_and_the_final_chunk_reports_it(server, drafted, options):
    text, last = _generate(drafted, **options)
    ref_text, ref_last = _generate(server, **options)
    assert text == ref_text and last["done_reason"] == ref_last["done_reason"]
    assert last["eval_count"] == ref_last["eval_count"] and "speculative" not in ref_last
    spec = last["speculative"]
    assert spec["draft"] == "ngram" and spec["exact"]
    assert spec["drafted"] >= spec["accepted"] >= 0 and spec["passes"] >= 1
    if options["num_predict"] == 40:
        assert spec["accepted"] > 0 and spec["tokens_per_pass"] > 1 and 0 < spec["acceptance_rate"] <= 1


@pytest.mark.parametrize("body,reason", [({"options": {"repeat_penalty": 1.3}}, "repetition penalties"),
                                         ({"options": {"frequency_penalty": 0.5}}, "repetition penalties"),
                                         ({"format": "json"}, "grammar")], ids=["repeat", "frequency", "format"])
def test_a_penalty_or_a_format_turns_the_draft_off_and_the_final_chunk_says_why(server, drafted, body, reason):
    """Drafting cannot serve these (each token's choice depends on every token before it, or on a grammar's
    state): the request decodes plainly, streams what the plain server streams, and its final chunk says why."""
    def go(srv):
        req = {"model": MODEL, "prompt": PROMPT, "stream": True, **body,
               "options": {"temperature": 0, "num_predict": 24, **body.get("options", {})}}
        status, _, raw = srv.request("POST", "/api/generate", req)
        assert status == 200, raw[:300]
        chunks = [json.loads(line) for line in raw.splitlines() if line.strip()]
        return "".join(c.get("response", "") for c in chunks), chunks[-1]

    (text, last), (ref_text, ref_last) = go(drafted), go(server)
    assert text == ref_text and last["eval_count"] == ref_last["eval_count"]
    spec = last["speculative"]
    assert reason in spec["off_reason"] and "passes" not in spec, spec
    if "format" in body:                                        # the grammar was applied, not dropped
        assert text.lstrip().startswith("{") and (last["done_reason"] != "stop" or json.loads(text) is not None)
    text2, last2 = _generate(drafted, num_predict=40)          # the next plain request drafts again
    # (drafting is back on; how deep the policy drafts follows this CPU's t(k): on a VM where t(2)/t(1) is 2.15
    # it drafts rarely, so whether this request accepts a draft is the machine's, not the mechanism's)
    assert "off_reason" not in last2["speculative"] and last2["speculative"]["passes"] >= 1


def test_a_draft_with_another_vocabulary_is_a_clear_load_error(drafted, default_model, tmp_path):
    import shutil

    shutil.copyfile(default_model, drafted.models_dir / "other.gguf")
    body = {"model": "other", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    status, _, raw = drafted.request("POST", "/api/generate", body)
    # the worker reports the load's ValueError as "value": 400, with llama.cpp's target and the draft named
    assert status in (400, 500) and b"must share the target's vocabulary" in raw, raw[:400]


def test_the_configuration_files_draft_table_reaches_the_settings(tmp_path):
    from hypura.config import load_config
    from hypura_server.drafts import check_drafts
    from hypura_server.wsgi import settings_from_config

    path = tmp_path / "config.toml"
    path.write_text('draft_max = 2\n[draft]\n"gemma3:270m" = "ngram"\n"llama3" = "llama3.2:1b"\n')
    cfg = load_config({"draft": ["qwen3:0.6b=ngram:2-3"]}, env={}, path=path)
    assert cfg.draft == {"gemma3:270m": "ngram", "llama3": "llama3.2:1b", "qwen3:0.6b": "ngram:2-3"}
    settings = settings_from_config(cfg, drafts=check_drafts(cfg.draft), draft_max=cfg.draft_max)
    assert settings.drafts == {"gemma3:270m": "ngram", "llama3:latest": "llama3.2:1b", "qwen3:0.6b": "ngram:2-3"}
    assert settings.draft_max == 2 and cfg.sources["draft"] == "flag --draft"
    with pytest.raises(ValueError, match="draft"):
        load_config({"draft": ["gemma3="]}, env={}, path=path)


def test_the_openai_usage_says_what_the_draft_did(server, drafted):
    """The real `openai` client: /v1/chat/completions with a draft gives the plain server's text, its usage
    carries OpenAI's own Predicted Outputs counts (drafted tokens accepted / rejected by the target) and the
    whole report; streamed with include_usage, the usage chunk carries them too."""
    import openai

    def client(srv):
        return openai.OpenAI(base_url=srv.url + "/v1", api_key="hypura", timeout=120, max_retries=0)

    msgs = [{"role": "user", "content": PROMPT}]
    r = client(drafted).chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, temperature=0)
    ref = client(server).chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, temperature=0)
    assert r.choices[0].message.content == ref.choices[0].message.content
    details, spec = r.usage.completion_tokens_details, r.usage.model_extra["speculative"]
    assert details.accepted_prediction_tokens == spec["accepted"] > 0
    assert details.rejected_prediction_tokens == spec["drafted"] - spec["accepted"] >= 0
    assert spec["tokens_per_pass"] > 1 and (ref.usage.completion_tokens_details is None
                                            or not ref.usage.completion_tokens_details.accepted_prediction_tokens)
    chunks = list(client(drafted).chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, temperature=0,
                                                          stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    # (the depth follows measured pass times, so another request may draft differently: its own counts agree)
    assert usage.completion_tokens_details.accepted_prediction_tokens == usage.model_extra["speculative"]["accepted"]


def test_a_client_that_disconnects_mid_draft_frees_the_model(server, drafted):
    """A streaming client that goes away while drafts are being verified frees the model at once, as without a
    draft: the next request is served at once, with the plain server's text and its own draft report."""
    import socket
    import time

    _generate(drafted, num_predict=2)                          # loaded
    sock = socket.create_connection((drafted.host, drafted.port))
    body = json.dumps({"model": MODEL, "prompt": PROMPT, "options": {"temperature": 0, "num_predict": 100000}}).encode()
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert b"HTTP/1.1 200" in sock.recv(4096)                  # streaming has begun
    sock.close()
    t0 = time.perf_counter()
    text, last = _generate(drafted, num_predict=24)
    assert time.perf_counter() - t0 < 3.0                      # the abandoned one (~1000 tokens) was cancelled
    ref_text, _ = _generate(server, num_predict=24)
    assert text == ref_text and last["speculative"]["passes"] >= 1 and "off_reason" not in last["speculative"]

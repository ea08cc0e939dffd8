"""The real `openai` client against /v1."""
from __future__ import annotations

import math

import openai
import pytest

from server_support import MODEL

MESSAGES = [{"role": "user", "content": "Name a fruit."}]


def test_models(openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert MODEL in ids
    assert openai_client.models.retrieve(MODEL).id == MODEL


def test_chat_streamed_equals_unstreamed(openai_client):
    r = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 5
    stream = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0,
                                                   stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_json_mode(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is fire hot? Reply in JSON."}], temperature=0, max_tokens=16,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"hot": {"type": "boolean"}}, "required": ["hot"]}}})
    import json

    assert isinstance(json.loads(r.choices[0].message.content)["hot"], bool)


def test_completions(openai_client):
    r = openai_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens == 4 and r.object == "text_completion"


def test_embeddings_float_and_base64(openai_client):
    r = openai_client.embeddings.create(model=MODEL, input=["hello world", "goodbye"])  # the client asks for base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 640
    assert math.isclose(sum(x * x for x in r.data[0].embedding), 1.0, rel_tol=1e-4)
    f = openai_client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)


def test_errors(openai_client):
    with pytest.raises(openai.NotFoundError) as exc:
        openai_client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "not found" in exc.value.message
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])

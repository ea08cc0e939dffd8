"""Generation through the engine and the `hypura run` CLI on the real default model."""
from __future__ import annotations

import json

import pytest

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions, TextStream

from helpers import run_hypura

PROMPT = "Why is the sky blue?"


def test_raw_greedy_equals_llama_simple(default_model, llama_bin):
    """`hypura run --raw --temp 0` produces exactly llama.cpp's greedy tokens."""
    import subprocess

    n = 32
    simple = subprocess.run([str(llama_bin / "llama-simple"), "-m", str(default_model), "-n", str(n), PROMPT],
                            capture_output=True, timeout=120, check=True).stdout.decode()
    res = run_hypura("run", str(default_model), "--raw", "--temp", "0", "-n", str(n - 1), "--mode", "resident",
                     "--json", "-p", PROMPT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # llama-simple prints the prompt (with <bos>) then n generated pieces
    generated = simple.split(PROMPT, 1)[1]
    assert out["text"] and generated.startswith(out["text"])
    assert len(out["tokens"]) == n - 1
    assert out["mode"] == "resident" and out["eval_tps"] > 0 and out["load_s"] > 0


def test_chat_template_of_the_default_model(default_model):
    runner = Runner(default_model, LoadOptions(mode="resident", ctx=256))
    try:
        text = runner.template.render([{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": PROMPT}])
        assert text == ("<bos><start_of_turn>user\nBe brief.\n\nWhy is the sky blue?<end_of_turn>\n"
                        "<start_of_turn>model\n")
        toks = runner.chat_prompt([{"role": "user", "content": PROMPT}])
        assert toks.count(runner.model.bos) == 1  # the template's BOS, not a second one
        assert runner.model.token_text(toks[1]) == "<start_of_turn>"
    finally:
        runner.close()


@pytest.fixture(scope="module")
def runner(default_model):
    r = Runner(default_model, LoadOptions(mode="resident", ctx=512))
    yield r
    r.close()


def _gen(runner, prompt, **kw):
    opts = GenerateOptions(num_predict=kw.pop("n", 16), sampling=SamplingOptions(temperature=0), **kw)
    items = list(runner.generate(runner.tokenize(prompt), opts))
    return "".join(x for x in items[:-1]), items[-1]


def test_kv_prefix_reuse_gives_the_same_tokens(runner):
    text1, r1 = _gen(runner, "The three primary colors are")
    text2, r2 = _gen(runner, "The three primary colors are")   # same prompt: cached prefix
    assert r2.prompt_tokens == 1 and r1.prompt_tokens == r1.prompt_total
    assert r1.tokens == r2.tokens and text1 == text2 == r1.text
    _, r3 = _gen(runner, "The three primary colors are red")    # extends the cached prompt
    assert r3.prompt_tokens < r3.prompt_total


def test_stop_strings_and_limits(runner):
    text, r = _gen(runner, "Count: one, two, three, four,", n=24)
    assert r.done_reason == "length" and len(r.tokens) == 24
    cut = text.strip().split(" ")[1]
    text2, r2 = _gen(runner, "Count: one, two, three, four,", n=24, stop=[cut])
    assert r2.done_reason == "stop" and cut not in text2 and text.startswith(text2)


def test_text_stream_handles_split_utf8_and_held_back_stops():
    s = TextStream(stop=["END"])
    snow = "❄".encode()
    assert s.feed(snow[:2]) == ""           # incomplete UTF-8 is held
    assert s.feed(snow[2:] + b" E") == "❄ "  # "E" might start "END": held back
    assert s.feed(b"N") == ""
    assert s.feed(b"D more") == "" and s.stopped and s.text == "❄ "

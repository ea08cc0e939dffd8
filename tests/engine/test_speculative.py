"""Speculative decoding through the engine and the CLI: greedy output with a draft is greedy output without one
(the real default model resident and dense-streamed, synthetic models with ngram and model drafts), the KV
positions of rejected drafts leave the cache, a draft with another vocabulary is refused, stop strings and
num_predict behave as without a draft, and seeded sampling is deterministic whatever the depth."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions
from hypura_synthetic import write_synthetic
from helpers import run_hypura

PROMPTS = [p["prompt"] for p in json.loads((Path(__file__).resolve().parents[2] / "tools" /
                                             "speculative_prompts.json").read_text())]
GREEDY = SamplingOptions(temperature=0)


def generate(runner, text, n=40, stop=(), sampling=GREEDY, raw=False):
    toks = runner.tokenize(text) if raw else runner.chat_prompt([{"role": "user", "content": text}])
    opts = GenerateOptions(num_predict=n, stop=list(stop), sampling=sampling)
    items = list(runner.generate(toks, opts))
    return items[-1], "".join(i for i in items[:-1])


@pytest.fixture(scope="module")
def reference(default_model):
    """Plain greedy decoding with `--mode resident` (THE reference) of a quarter of the prompts, and two
    with a stop string and a small num_predict."""
    runner = Runner(default_model, LoadOptions(mode="resident", ctx=1024))
    try:
        out = {i: generate(runner, PROMPTS[i]) for i in range(0, len(PROMPTS), 4)}
        out["stop"] = generate(runner, PROMPTS[5], stop=["server"])
        out["short"] = generate(runner, PROMPTS[12], n=5)
    finally:
        runner.close()
    return out


def _check_same(runner, reference):
    drafted = accepted = 0
    for key, (ref, ref_text) in reference.items():
        i = key if isinstance(key, int) else {"stop": 5, "short": 12}[key]
        kw = {"stop": ["server"]} if key == "stop" else {"n": 5} if key == "short" else {}
        res, text = generate(runner, PROMPTS[i], **kw)
        assert res.tokens == ref.tokens, (key, runner.mode)
        assert (res.text, text, res.done_reason) == (ref.text, ref_text, ref.done_reason), key
        spec = res.speculative
        assert spec["exact"] and spec["passes"] >= 1
        drafted, accepted = drafted + spec["drafted"], accepted + spec["accepted"]
        # every generated token after the first came from a pass: passes * tokens_per_pass counts them
        assert round(spec["passes"] * spec["tokens_per_pass"]) == len(res.tokens) - 1
    assert reference["stop"][0].done_reason == "stop" and reference["short"][0].done_reason == "length"
    return drafted, accepted


def test_greedy_with_ngram_equals_greedy_without_on_the_default_model_resident(default_model, reference):
    runner = Runner(default_model, LoadOptions(mode="resident", ctx=1024, draft="ngram"))
    try:
        assert runner.speculation.exact >= 2 and runner.speculation.k_max == runner.speculation.exact - 1
        drafted, accepted = _check_same(runner, reference)
    finally:
        runner.close()
    assert accepted > 10 and drafted > accepted     # drafts were accepted and rejected: both paths ran


def test_greedy_with_ngram_equals_greedy_without_on_the_default_model_dense_streamed(default_model, reference):
    from hypura_engine.planning import plan_for

    full, _ = plan_for(default_model, LoadOptions(mode="auto", ctx=1024, ram_budget=64 << 30))
    ffn = sum(r["ffn_bytes"] for r in full.layers)
    budget = full.used("ram") - ffn * 6 // 10       # at least half of the FFN bytes stream from disk
    runner = Runner(default_model, LoadOptions(mode="dense-stream", ctx=1024, ram_budget=budget, draft="ngram"))
    try:
        assert len(runner.plan.streamed_layers["nvme"]) >= 9
        drafted, accepted = _check_same(runner, reference)
        assert runner.stats()["bytes_from_disk"] > 0
    finally:
        runner.close()
    assert accepted > 10 and drafted > accepted


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    kw = dict(layers=2, scale=16, vocab=512)
    return {"q4": write_synthetic(d / "q4.gguf", "llama3-70b", qtype="Q4_0", **kw),
            "other": write_synthetic(d / "other.gguf", "llama3-70b", qtype="Q4_0", seed=1, **kw),
            "vocab600": write_synthetic(d / "v600.gguf", "llama3-70b", qtype="Q4_0", layers=1, scale=16,
                                        vocab=600)}


SYN_PROMPTS = ["the cat sat on the mat and the cat sat on the", "a b c d a b c d a b", "1 2 3 4 5 6 7 8 9"]


@pytest.mark.parametrize("draft", ["ngram", "q4", "other"])
def test_greedy_with_a_draft_equals_greedy_without_on_a_synthetic_model(synthetic, draft):
    plain = Runner(synthetic["q4"], LoadOptions(mode="resident", ctx=256))
    try:
        refs = [generate(plain, p, n=48, raw=True)[0].tokens for p in SYN_PROMPTS]
    finally:
        plain.close()
    spec = draft if draft == "ngram" else str(synthetic[draft])
    # a fixed depth of 4: the depth policy would (rightly) turn a draft as slow as the target off
    runner = Runner(synthetic["q4"], LoadOptions(mode="resident", ctx=256, draft=spec, draft_depth=4))
    try:
        assert runner.speculation.exact == 9 and runner.speculation.k_exact == 8  # Q4_0: every batch exact
        outs = [generate(runner, p, n=48, raw=True)[0] for p in SYN_PROMPTS]
    finally:
        runner.close()
    assert [o.tokens for o in outs] == refs
    drafted = sum(o.speculative["drafted"] for o in outs)
    accepted = sum(o.speculative["accepted"] for o in outs)
    if draft == "q4":            # the target as its own draft: every draft accepted, several tokens a pass
        assert accepted == drafted > 0 and min(o.speculative["tokens_per_pass"] for o in outs) > 2
    elif draft == "other":       # another random model: its drafts are rejected
        assert drafted > accepted
    else:                        # prompt lookup on repetitive prompts: accepted and rejected
        assert drafted > accepted > 0


def test_rejected_drafts_leave_the_kv_cache(synthetic):
    """After a generation with rejections the cache holds exactly the tokens the runner says it holds: a
    follow-up prompt that extends them reuses them and gives what a fresh context gives."""
    first = "the cat sat on the mat and the cat sat on the"
    runner = Runner(synthetic["q4"], LoadOptions(mode="resident", ctx=256, draft=str(synthetic["other"])))
    try:
        toks = runner.tokenize(first)
        res, _ = generate(runner, first, n=24, raw=True)
        assert res.speculative["accepted"] < res.speculative["drafted"]      # rejections happened
        assert res.done_reason == "length" and runner.cached == toks + res.tokens[:-1]
        assert runner.ctx.pos_max() == len(runner.cached) - 1               # nothing after them in the cache
        prompt = toks + res.tokens + runner.tokenize(" dog", add_special=False)
        again = list(runner.generate(prompt, GenerateOptions(num_predict=16, sampling=GREEDY)))[-1]
        assert again.prompt_tokens < len(prompt)                                # the prefix was reused
    finally:
        runner.close()
    fresh = Runner(synthetic["q4"], LoadOptions(mode="resident", ctx=256))
    try:
        ref = list(fresh.generate(prompt, GenerateOptions(num_predict=16, sampling=GREEDY)))[-1]
    finally:
        fresh.close()
    assert again.tokens == ref.tokens


def test_a_draft_with_another_vocabulary_is_refused(default_model, synthetic):
    with pytest.raises(ValueError, match="600 tokens.*512|vocabulary"):
        Runner(synthetic["q4"], LoadOptions(mode="resident", ctx=256, draft=str(synthetic["vocab600"])))
    with pytest.raises(ValueError, match="vocabulary"):
        Runner(default_model, LoadOptions(mode="resident", ctx=256, draft=str(synthetic["q4"])))
    r = run_hypura("run", str(default_model), "--draft", str(synthetic["q4"]), "-p", "hi", "-n", "4")
    assert r.returncode != 0 and "vocabulary" in r.stderr and "Traceback" not in r.stderr, r.stderr[-800:]


def test_seeded_sampling_is_deterministic_whatever_the_depth(default_model, synthetic):
    """Temperature > 0 with a seed: the same tokens at every depth and on every run — with prompt lookup on the
    default model, and with a model draft (another random model: rejections) on the synthetic one."""
    s = SamplingOptions(temperature=0.9, top_k=40, top_p=0.95, seed=1234)
    cases = [(default_model, "ngram", PROMPTS[0], False),
             (synthetic["q4"], str(synthetic["other"]), SYN_PROMPTS[0], True)]
    for path, draft, text, raw in cases:
        outs = []
        for k in (1, 2, 2):
            runner = Runner(path, LoadOptions(mode="resident", ctx=1024, draft=draft, draft_max=k))
            try:
                outs.append(generate(runner, text, n=32, sampling=s, raw=raw)[0])
            finally:
                runner.close()
        assert outs[0].tokens == outs[1].tokens == outs[2].tokens, draft
        assert sum(o.speculative["drafted"] for o in outs) > 0
        if draft == "ngram":
            assert sum(o.speculative["accepted"] for o in outs) > 0
        other = Runner(path, LoadOptions(mode="resident", ctx=1024, draft=draft))
        try:     # another seed, other tokens (the seed is used)
            s2 = SamplingOptions(temperature=0.9, top_k=40, top_p=0.95, seed=99)
            assert generate(other, text, n=32, sampling=s2, raw=raw)[0].tokens != outs[0].tokens
        finally:
            other.close()


def test_cli_json_reports_the_draft(default_model):
    args = ("run", str(default_model), "--temp", "0", "-n", "24", "--json", "-p", PROMPTS[12])
    plain = run_hypura(*args)
    spec = run_hypura(*args, "--draft", "ngram")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr[-800:]
    own = run_hypura(*args, "--draft", str(default_model))      # the model as its own draft: vocabulary checked
    assert own.returncode == 0, own.stderr[-800:]
    a, b, c = json.loads(plain.stdout), json.loads(spec.stdout), json.loads(own.stdout)
    assert a["tokens"] == b["tokens"] == c["tokens"] and "speculative" not in a
    assert c["speculative"]["draft"] == str(default_model)
    s = b["speculative"]
    assert s["draft"] == "ngram" and s["exact"] and s["drafted"] >= s["accepted"] > 0
    assert s["tokens_per_pass"] > 1 and 0 < s["acceptance_rate"] <= 1 and s["passes"] > 0

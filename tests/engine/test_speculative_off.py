"""When drafting must not run, it turns itself off and says why: a repetition, presence or frequency penalty (each
depends on every token before it) or a grammar (its state follows every accepted token) makes a generation with
a draft decode plainly, with the output of plain decoding under the same options and the reason in the result's
`speculative` object; the next request without them drafts again. A penalty over no tokens (repeat_last_n 0)
penalises nothing, so drafting stays on. Real default model, resident, greedy."""
from __future__ import annotations

import json

import pytest

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions

PROMPT = "Repeat this list exactly: apples, pears, plums, cherries, apples, pears, plums, cherries, apples, pears"
JSON_GRAMMAR = r'''root ::= "{" ws "\"fruit\"" ws ":" ws "\"" [a-z]+ "\"" ws "}"
ws ::= [ \t\n]*'''

OFF = [({"repeat_penalty": 1.3}, "repetition penalties"),
       ({"presence_penalty": 0.5}, "repetition penalties"),
       ({"frequency_penalty": 0.5}, "repetition penalties"),
       ({"grammar": JSON_GRAMMAR}, "grammar")]


def _generate(runner: Runner, n: int = 24, **sampling):
    opts = GenerateOptions(num_predict=n, sampling=SamplingOptions(temperature=0, **sampling))
    return list(runner.generate(runner.chat_prompt([{"role": "user", "content": PROMPT}]), opts))[-1]


@pytest.fixture(scope="module")
def runners(default_model):
    plain = Runner(default_model, LoadOptions(mode="resident", ctx=1024))
    # a fixed depth: whether drafting runs must not depend on the depth policy's timings of a busy machine
    drafted = Runner(default_model, LoadOptions(mode="resident", ctx=1024, draft="ngram", draft_depth=2))
    yield plain, drafted
    drafted.close()
    plain.close()


@pytest.mark.parametrize("sampling,reason", OFF, ids=["repeat", "presence", "frequency", "grammar"])
def test_a_penalty_or_a_grammar_turns_drafting_off_with_its_reason(runners, sampling, reason):
    plain, drafted = runners
    ref = _generate(plain, **sampling)
    res = _generate(drafted, **sampling)
    assert res.tokens == ref.tokens and res.text == ref.text and res.done_reason == ref.done_reason
    spec = res.speculative
    assert spec is not None and reason in spec["off_reason"], spec
    assert "passes" not in spec and "drafted" not in spec          # no pass verified a draft
    if "grammar" in sampling:                                     # the grammar was applied (not silently dropped)
        assert json.loads(res.text)["fruit"].isalpha()
    again = _generate(drafted)                                    # the next request drafts again
    assert "off_reason" not in again.speculative and again.speculative["accepted"] > 0
    assert again.tokens == _generate(plain).tokens


def test_a_penalty_over_no_tokens_keeps_drafting_on(runners):
    plain, drafted = runners
    res = _generate(drafted, repeat_penalty=1.3, repeat_last_n=0)
    assert "off_reason" not in res.speculative and res.speculative["accepted"] > 0
    assert res.tokens == _generate(plain, repeat_penalty=1.3, repeat_last_n=0).tokens


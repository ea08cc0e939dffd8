"""`hypura run` with no context flag sizes the KV cache for what the run can use (its prompt and -n), so that a
context it cannot reach costs no expert cache or resident FFN under a tight budget (issue 18); a --ctx flag or
HYPURA_CTX is honoured as given, and --json says which and why."""
from __future__ import annotations

import json

from helpers import run_hypura

PROMPT = "Why is the sky blue? Answer in one sentence."


def _run(default_model, *extra, env=None):
    r = run_hypura("run", str(default_model), "-p", PROMPT, "-n", "40", "--temp", "0", "--json", *extra, env=env)
    assert r.returncode == 0, r.stderr[-600:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_context_fits_the_prompt_and_n_when_none_is_given(default_model):
    out = _run(default_model)
    # the chat prompt (template included) + 40 tokens + drafts' slack, in whole multiples of 256
    assert out["ctx"] == 256 and out["prompt_tokens"] + 40 <= out["ctx"]
    assert "fitted to the prompt" in out["ctx_reason"] and "-n 40" in out["ctx_reason"]
    from hypura_engine.planning import fit_context   # the same fit for a longer answer, without decoding it

    ctx, why = fit_context(default_model, [PROMPT], 300, 4096, chat=True)
    assert ctx == 512 and "-n 300" in why
    assert fit_context(default_model, [PROMPT], 300, 384, chat=True)[0] == 384     # never above the ceiling
    assert fit_context(default_model, [PROMPT], -1, 4096, chat=True)[0] == 4096    # -n -1: any length


def test_an_explicit_context_is_honoured(default_model):
    assert _run(default_model, "--ctx", "1024")["ctx"] == 1024
    out = _run(default_model, env={"HYPURA_CTX": "2048"})
    assert out["ctx"] == 2048 and "ctx_reason" not in out
    forced = _run(default_model, "--mode", "resident")   # only auto fits: a forced mode plans as asked
    assert forced["ctx"] == 4096

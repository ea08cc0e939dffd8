"""Helpers shared by tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import os
import subprocess
import sys

HYPURA = [sys.executable, "-m", "hypura.main"]


def run_hypura(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real `hypura` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*HYPURA, *args], capture_output=True, text=True, timeout=timeout, env=full_env, **kw)


def greedy_with_logits(model, eval_filter=None, n: int = 8, ubatch: int = 512, n_ctx: int = 128,
                       prompt: str = "The quick brown fox jumps over the lazy dog"):
    """Greedy tokens and every step's logits (copied) through the real llama.cpp context; the prompt is
    decoded as one batch split into `ubatch`-token ubatches."""
    import numpy as np

    import hypura_llama as h

    with h.LlamaContext(model, h.ContextParams(n_ctx=n_ctx, n_batch=ubatch, n_ubatch=ubatch), eval_filter) as ctx:
        toks = model.tokenize(prompt)
        ctx.decode(toks, 0)
        out, logits = [], []
        for i in range(n):
            logits.append(ctx.logits().copy())
            out.append(int(np.argmax(logits[-1])))
            ctx.decode([out[-1]], len(toks) + i)
        return out, np.stack(logits)


def reference_greedy(path, n: int = 8, ubatch: int = 512, n_ctx: int = 128,
                     prompt: str = "The quick brown fox jumps over the lazy dog"):
    """THE reference (DESIGN.md "Correctness invariant"): greedy tokens and logits of the model that
    `hypura run --mode resident` loads with default settings (llama.cpp's default load; on the CPU its
    weights repacked), through `greedy_with_logits`."""
    from hypura_engine import LoadOptions, Runner

    runner = Runner(path, LoadOptions(mode="resident", ctx=n_ctx))
    try:
        return greedy_with_logits(runner.model, None, n=n, ubatch=ubatch, n_ctx=n_ctx, prompt=prompt)
    finally:
        runner.close()

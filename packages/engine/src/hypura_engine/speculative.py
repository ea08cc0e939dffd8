"""Speculative decoding: draft tokens cheaply, verify them in one pass of the target, keep what it agrees with.

A streamed model pays its disk reads once per pass whatever the batch, so k drafted tokens verified in one
pass cost about what one token costs, and every accepted one is a token without a pass of its own.

Per pass: the token chosen last and up to k drafts go to the target as one batch (logits for every row);
row j is the target's distribution after the j-th token, and the target's own choice there
(`spec_sampling.TokenChooser`) is compared with draft j + 1. The longest agreeing prefix is emitted, then the
target's choice at the first disagreement (or after the last draft); the KV cache positions of rejected drafts
are removed. Emitted tokens go through the same checks as plain decoding (end of generation, stop strings,
num_predict, context full, cancel and abort), one by one.

Exactness: llama.cpp's logits for a row of a batch are not always bit-identical to those of the same token
decoded alone (on this CPU: repacked Q4_K weights go through a 4-row GEMM kernel, F16 weights through another
GEMM for any batch > 1). `exact_batch` measures, at load, the largest batch whose rows equal single-token
decoding on this model, backend and thread count; greedy (and seeded sampling) never verify more rows than
that unless `draft_max` asks for more, so with a draft greedy output is the output without one.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from hypura_llama import DecodeError

from .depth import DepthPolicy
from .draft import Drafter, open_draft
from .generation import GenerateOptions, GenerationResult, TextStream
from .spec_sampling import TokenChooser

if TYPE_CHECKING:                # the runner owns a Speculation; this module never imports it
    from .runner import Runner

log = logging.getLogger(__name__)

DEFAULT_DRAFT_MAX = 8
PROBE_TEXT = ("Speculative decoding checks the drafted tokens in one batch of the target model: "
              "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.")


def exact_batch(ctx, model, n_max: int) -> int:
    """The largest n <= n_max such that every batch of 2..n tokens gives, row by row, the logits that decoding
    the same tokens one at a time gives (1 if even 2 differ). Uses and then clears the KV cache."""
    toks = model.tokenize(PROBE_TEXT)
    while len(toks) < 8 + n_max:
        toks = toks + toks
    m = 4
    n_max = max(1, min(n_max, ctx.n_ctx - m - 1))
    try:
        ctx.clear()
        ctx.decode(toks[:m], 0)
        single = []
        for i in range(n_max):
            ctx.decode([toks[m + i]], m + i)
            single.append(ctx.logits().copy())
        best = 1
        for n in range(2, n_max + 1):
            ctx.truncate(m)
            ctx.decode(toks[m:m + n], m, all_logits=True)
            if not all(np.array_equal(ctx.logits(j), single[j]) for j in range(n)):
                break
            best = n
        return best
    finally:
        ctx.clear()


class Speculation:
    """A runner's drafter, its depth policy and what was measured about batched verification."""

    def __init__(self, runner: Runner, spec: str, draft_max: int | None = None, depth: int | None = None) -> None:
        self.runner = runner
        self.spec = spec
        self.drafter: Drafter = open_draft(spec, runner.model, runner.n_ctx, runner.opts.n_threads)
        try:
            t0 = time.perf_counter()
            self.exact = exact_batch(runner.ctx, runner.model, 1 + (draft_max or DEFAULT_DRAFT_MAX))
            runner.cached = []
            self.probe_s = time.perf_counter() - t0
        except BaseException:
            self.drafter.close()
            raise
        # greedy and seeded sampling stay within exact batches unless asked for more
        self.k_exact = self.exact - 1
        self.k_asked = draft_max
        self.k_max = draft_max if draft_max is not None else min(DEFAULT_DRAFT_MAX, self.k_exact)
        if depth is not None:
            self.k_max = depth if draft_max is None else min(depth, draft_max)
        self.policy = DepthPolicy(self.k_max, runner.mode, fixed=self.k_max if depth is not None else None)
        self.off_reason = ""

    def close(self) -> None:
        self.drafter.close()

    def applies(self, opts: GenerateOptions) -> bool:
        """Speculation serves this request (else plain decoding; `off_reason` says why)."""
        s = opts.sampling
        if s.grammar:
            self.off_reason = "grammar: a grammar's state follows every accepted token (not drafted)"
        elif (s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty) and s.repeat_last_n != 0:
            self.off_reason = "repetition penalties: they depend on every earlier token (not drafted)"
        elif self.k_max <= 0:
            self.off_reason = (f"batched logits differ from single-token logits on this model and backend (exact "
                               f"batch {self.exact}): pass --draft-max to draft anyway")
        else:
            self.off_reason = ""
        return not self.off_reason

    def info(self) -> dict[str, Any]:
        return {"draft": self.spec, "draft_max": self.k_max, "fixed_depth": self.policy.fixed,
                "exact_batch": self.exact, "exact": self.k_max <= self.k_exact, "probe_s": round(self.probe_s, 3),
                **({"off_reason": self.off_reason} if self.off_reason else {})}

    # -- the decode loop ------------------------------------------------------------------
    def decode(self, prompt: list[int], opts: GenerateOptions, res: GenerationResult, stream: TextStream,
               limit: int, cancel, on_logits: Callable[[np.ndarray], None] | None) -> Iterator[str]:
        """Runner.generate's token loop with drafts: fills `res` (tokens, done_reason, timings, speculative)."""
        runner, ctx, model = self.runner, self.runner.ctx, self.runner.model
        chooser = TokenChooser(opts.sampling)
        drafter, policy = self.drafter, self.policy
        model_draft = drafter.kind == "model"
        # a seeded sampling run with a model draft must draft at every position (its token depends on q there)
        keep_on = model_draft and not chooser.greedy and opts.sampling.seed != 0xFFFFFFFF
        drafter.begin(prompt)
        n_ctx = runner.n_ctx
        passes = drafted = accepted = 0
        pending: int | None = None    # the target's choice made during the last verification
        row = -1

        def emit(tok: int) -> str | None:
            """Plain decoding's checks for one chosen token; returns its text or None when generation ends."""
            if model.is_eog(tok):
                res.done_reason = "stop"
                return None
            res.tokens.append(tok)
            drafter.accept([tok])
            return stream.feed(model.token_to_piece(tok))

        while True:
            if res.ended(cancel, limit):
                break
            if pending is None:
                logits = ctx.logits(row)
                if on_logits is not None:
                    on_logits(logits)
                t0 = time.perf_counter_ns()
                tok = chooser.target(logits, len(prompt) + len(res.tokens))
                res.sample_ns += time.perf_counter_ns() - t0
            else:
                tok, pending = pending, None
            piece = emit(tok)
            if piece is None:
                break
            if piece:
                yield piece
            if stream.stopped:
                res.done_reason = "stop"
                break
            if len(runner.cached) + 1 >= n_ctx or len(res.tokens) >= limit:
                res.done_reason = "length"
                break
            # draft: no more than the tokens still wanted and the context can take
            room = min(limit - len(res.tokens) - 1, n_ctx - len(runner.cached) - 2)
            k = policy.depth(room)
            if keep_on:
                k = max(k, min(1, room))
            pos = len(prompt) + len(res.tokens)         # position of the first draft
            t0 = time.perf_counter()
            want = k + 1 if model_draft and not chooser.greedy and k > 0 else k
            drafts, dists = drafter.propose(want, chooser.draft if model_draft else None) if want else ([], [])
            draft_s = time.perf_counter() - t0
            res.eval_ns += int(draft_s * 1e9) if model_draft else 0   # a draft model's passes are decode time too
            batch = [tok] + drafts[:k]
            base = len(runner.cached)
            t0 = time.perf_counter_ns()
            try:
                ctx.decode(batch, base, all_logits=len(batch) > 1)
                ctx.synchronize()
            except BaseException as exc:      # as plain decoding: the KV cache is no longer trustworthy
                runner.cached = []
                ctx.clear()
                if not (isinstance(exc, DecodeError) and exc.code == 2 and cancel is not None and cancel.is_set()):
                    raise                     # not Runner.abort() of this cancelled generation
                res.done_reason = "aborted"
                break
            dt = time.perf_counter_ns() - t0
            res.eval_ns += dt
            passes += 1
            policy.record_pass(len(batch), dt / 1e9)
            runner.cached.extend(batch)
            # verify: row j holds the target's logits after batch[j]
            n_draft = len(batch) - 1
            n_ok = 0
            t0 = time.perf_counter_ns()
            for j in range(n_draft + 1):
                logits = ctx.logits(j) if n_draft else ctx.logits(-1)
                d = drafts[j] if j < len(drafts) else None
                x = chooser.target(logits, pos + j, d, dists[j] if d is not None else None)
                if j < n_draft and x == d:
                    n_ok += 1
                    continue
                pending = x
                if on_logits is not None:   # the rows of accepted drafts first, in order
                    for i in range(j):
                        on_logits(ctx.logits(i))
                    on_logits(logits)
                break
            res.sample_ns += time.perf_counter_ns() - t0
            drafted += n_draft
            accepted += n_ok
            policy.record_drafts(n_draft, n_ok, draft_s)
            if n_ok < n_draft:                 # the rejected drafts' positions leave the KV cache
                keep = base + 1 + n_ok
                if not ctx.truncate(keep):
                    raise RuntimeError(f"llama.cpp could not remove KV positions {keep}.. of rejected drafts")
                del runner.cached[keep:]
            row = -1
            stop = False
            for tok in drafts[:n_ok]:
                piece = emit(tok)
                if piece is None:
                    stop = True
                    break
                if piece:
                    yield piece
                if stream.stopped:
                    res.done_reason = "stop"
                    stop = True
                    break
                if len(res.tokens) >= limit:
                    res.done_reason = "length"
                    stop = True
                    break
            if stop:
                break
        gen = max(len(res.tokens) - 1, 0)
        res.speculative = {**self.info(), "passes": passes, "drafted": drafted, "accepted": accepted,
                           "acceptance_rate": round(accepted / drafted, 4) if drafted else 0.0,
                           "tokens_per_pass": round(gen / passes, 4) if passes else 0.0,
                           **self.policy.summary()}

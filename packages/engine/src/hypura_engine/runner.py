"""A loaded model ready to generate: llama.cpp model + context + (optionally) a weight streamer.

One `Runner` serves one request at a time (its lock); the KV cache is reused across requests
whose token prefix matches (the turns of a chat).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from hypura_llama import ContextParams, DecodeError, LlamaContext, LlamaModel, ModelParams, Sampler, backend_name
from hypura_streaming import StreamError

from .generation import GenerateOptions, GenerationResult, TextStream
from .options import RUN_MODES, LoadOptions
from .templates import ChatTemplate

log = logging.getLogger(__name__)


class Runner:
    """Owns model, context, sampler state, and the streamer when the plan streams weights."""

    def __init__(self, path: str | os.PathLike, opts: LoadOptions | None = None, name: str | None = None) -> None:
        from hypura_placement import validate_gguf

        self.opts = opts = opts or LoadOptions()
        if opts.mode not in RUN_MODES:
            raise ValueError(f"unknown mode {opts.mode!r} (one of {', '.join(RUN_MODES)})")
        self.path = Path(path)
        self.name = name or self.path.stem
        validate_gguf(self.path)            # llama.cpp aborts on some malformed files: check first
        self.lock = threading.Lock()
        from hypura_hardware import rss_bytes

        self.rss_at_start = rss_bytes()     # already in the memory the plan's budget was measured against
        t0 = time.perf_counter_ns()
        self.plan = None
        self.streamer = None
        self.mode = "resident"
        eval_filter = None
        n_ubatch = opts.n_batch
        self.ubatch_reason = ""      # why prompts go in smaller ubatches than asked for (one line; "" if not)
        self.mode_reason = "asked for" if opts.mode != "auto" else "the plan's mode"
        self.model = None
        if opts.mode != "resident":
            from .planning import MODE_OF_PLAN, open_streamer, plan_for

            self.plan, info = plan_for(self.path, opts)
            self.mode = MODE_OF_PLAN[self.plan.mode] if opts.mode == "auto" else opts.mode
            if self.mode != "resident":
                try:
                    self.streamer = open_streamer(self.path, self.plan, info, self.mode, prefetch=opts.prefetch,
                                              repack=opts.use_extra_bufts)
                    self.model = self.streamer.load_model()
                except (ValueError, StreamError) as exc:
                    if self.streamer is not None:
                        self.streamer.close()
                        self.streamer = None
                    if opts.mode != "auto":
                        raise
                    # auto never fails where another mode runs: llama.cpp's own loading runs any file it loads
                    self.mode_reason = f"{self.mode} cannot take this file: {exc}"
                    log.warning("%s: %s; running resident (llama.cpp's mmap loading)", self.path, self.mode_reason)
                    self.mode = "resident"
                except BaseException:
                    if self.streamer is not None:
                        self.streamer.close()
                    raise
        self._resident_tier = "gpu" if self.streamer is None and backend_name() != "cpu" else "ram"
        if self.streamer is None:
            self.model = LlamaModel.load(self.path, ModelParams(n_gpu_layers=-1, load_mode="mmap",
                                                                use_extra_bufts=opts.use_extra_bufts))
        else:
            eval_filter = self.streamer.eval_filter
            if self.streamer.max_ubatch is not None and self.streamer.max_ubatch < n_ubatch:
                n_ubatch = self.streamer.max_ubatch
                self.ubatch_reason = _split_prompt_reason(self.streamer, n_ubatch)
                log.warning("%s: %s", self.path, self.ubatch_reason)
        try:
            n_ctx = max(16, min(opts.ctx, self.model.n_ctx_train or opts.ctx))
            self.ctx = LlamaContext(self.model, ContextParams(n_ctx=n_ctx, n_batch=opts.n_batch,
                                                             n_ubatch=n_ubatch, n_threads=opts.n_threads,
                                                             embeddings=opts.embeddings), eval_filter)
            if opts.warm_start and self.mode == "expert-stream":
                from .routing_stats import load_counts

                counts = load_counts(self.path)
                if counts:
                    self.streamer.warm_start(counts)
        except BaseException:
            self.close()
            raise
        self.load_ns = time.perf_counter_ns() - t0
        self.cached: list[int] = []   # tokens whose KV is in the cache (sequence 0)
        meta = self.model.metadata()
        self.metadata = meta
        self.arch = meta.get("general.architecture", "")
        self.template = ChatTemplate.for_model(self.model.chat_template(), self.arch,
                                               self.model.token_text(self.model.bos) if self.model.bos >= 0 else "",
                                               self.model.token_text(self.model.eos) if self.model.eos >= 0 else "")
        self.speculation = None       # speculative decoding (speculative.py) when a draft is asked for
        if opts.draft:
            from .speculative import Speculation

            try:
                self.speculation = Speculation(self, opts.draft, opts.draft_max, opts.draft_depth)
            except BaseException:
                self.close()
                raise

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self.mode == "expert-stream" and getattr(self, "streamer", None) is not None:
            from .routing_stats import save_counts

            save_counts(self.path, self.streamer.routing_counts())
        for attr in ("speculation", "ctx", "model", "streamer"):
            obj = getattr(self, attr, None)
            if obj is not None:
                obj.close()
                setattr(self, attr, None)

    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    # -- prompts --------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=True)

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list | None = None,
                    think: bool | None = None) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True, tools=tools, think=think)
        # the template writes the BOS token itself when the model wants one
        return self.tokenize(text, add_special=not text.startswith(self.template.bos_token or "\x00"))

    # -- generation -----------------------------------------------------------------------
    def _prefill(self, prompt: list[int]) -> int:
        """Decode the prompt, reusing the cached prefix. Returns how many tokens were evaluated."""
        keep = 0
        for a, b in zip(self.cached, prompt):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)  # always evaluate the last token for fresh logits
        if keep < len(self.cached):
            if not self.ctx.truncate(keep):
                self.ctx.clear()
                keep = 0
        self.cached = self.cached[:keep]
        todo = prompt[keep:]
        self.ctx.decode(todo, keep)
        self.ctx.synchronize()  # GPU decodes are asynchronous: time the work, not its launch
        self.cached.extend(todo)
        return len(todo)

    def generate(self, prompt: list[int], opts: GenerateOptions | None = None,
                 cancel: threading.Event | None = None,
                 on_logits: Callable[[np.ndarray], None] | None = None) -> Iterator[str | GenerationResult]:
        """Yield text pieces as they are generated, then one GenerationResult. Caller holds `lock`."""
        opts = opts or GenerateOptions()
        res = GenerationResult(prompt_total=len(prompt), load_ns=0)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the context of {self.n_ctx} tokens")
        t_start = time.perf_counter_ns()
        self.ctx.clear_abort()        # an abort() that came after the last request's decodes ended
        try:
            res.prompt_tokens = self._prefill(prompt)
        except BaseException as exc:
            self.cached = []
            self.ctx.clear()
            if _aborted(exc, cancel):     # cancelled inside the prompt's decode (llama.cpp's abort callback)
                res.done_reason = "aborted"
                res.total_ns = time.perf_counter_ns() - t_start
                yield res
                return
            raise
        res.prompt_ns = time.perf_counter_ns() - t_start
        stream = TextStream(opts.stop)
        limit = opts.num_predict if opts.num_predict >= 0 else self.n_ctx
        spec = self.speculation
        decode = spec.decode if spec is not None and spec.applies(opts) else self._decode_tokens
        yield from decode(prompt, opts, res, stream, limit, cancel, on_logits)
        tail = stream.finish()
        if tail:
            yield tail
        res.text = stream.text
        res.total_ns = time.perf_counter_ns() - t_start
        if spec is not None and res.speculative is None:
            res.speculative = spec.info()
        yield res

    def _decode_tokens(self, prompt: list[int], opts: GenerateOptions, res: GenerationResult, stream: TextStream,
                       limit: int, cancel: threading.Event | None,
                       on_logits: Callable[[np.ndarray], None] | None) -> Iterator[str]:
        """Plain decoding: one token a pass."""
        with Sampler(self.model, opts.sampling) as sampler:
            last_n = opts.sampling.repeat_last_n
            sampler.accept_history(prompt if last_n < 0 else prompt[len(prompt) - last_n:] if last_n else ())
            while True:
                if res.ended(cancel, limit):
                    break
                if on_logits is not None:
                    on_logits(self.ctx.logits())
                t0 = time.perf_counter_ns()
                tok = sampler.sample(self.ctx)
                res.sample_ns += time.perf_counter_ns() - t0
                if self.model.is_eog(tok):
                    res.done_reason = "stop"
                    break
                res.tokens.append(tok)
                piece = stream.feed(self.model.token_to_piece(tok))
                if piece:
                    yield piece
                if stream.stopped:
                    res.done_reason = "stop"
                    break
                if len(self.cached) + 1 >= self.n_ctx:
                    res.done_reason = "length"
                    break
                if len(res.tokens) >= limit:
                    res.done_reason = "length"
                    break
                t0 = time.perf_counter_ns()
                try:
                    self.ctx.decode([tok], len(self.cached))
                    self.ctx.synchronize()
                except BaseException as exc:  # decode or stream error: the KV cache is no longer trustworthy
                    self.cached = []
                    self.ctx.clear()
                    if not _aborted(exc, cancel):
                        raise
                    res.done_reason = "aborted"
                    break
                res.eval_ns += time.perf_counter_ns() - t0
                self.cached.append(tok)

    def embed(self, text: str) -> list[float]:
        """Mean-pooled, L2-normalised embedding of `text` (needs LoadOptions.embeddings)."""
        toks = self.tokenize(text)[: min(self.n_ctx, self.ctx.n_batch) - 1]
        self.cached = []
        self.ctx.clear()
        self.ctx.set_embeddings(True)
        try:
            self.ctx.decode(toks, 0, all_logits=True)
            rows = [self.ctx.embeddings_ith(i) for i in range(len(toks))]
        finally:
            self.ctx.set_embeddings(False)
            self.ctx.clear()
        vec = np.mean(np.stack(rows), axis=0)
        norm = float(np.linalg.norm(vec)) or 1.0
        return (vec / norm).astype(float).tolist()

    def abort(self) -> None:
        """From another thread: stop the decode running now (llama.cpp's abort callback, honoured between graph
        nodes on the CPU); the generation it belongs to ends with done_reason "aborted" when its `cancel` is set."""
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            ctx.abort()

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        size = self.path.stat().st_size
        out: dict[str, Any] = {"mode": self.mode, "mode_reason": self.mode_reason, "model_bytes": size,
                               "ctx": self.ctx.n_ctx, **({"ctx_reason": self.opts.ctx_reason} if self.opts.ctx_reason
                                                         else {})}
        if self.ubatch_reason:
            out["prompt_ubatch"], out["prompt_ubatch_reason"] = self.ctx.params.n_ubatch, self.ubatch_reason
        if self.streamer is None:   # llama.cpp's own placement: every layer on the compute device
            tier = self._resident_tier
            out["tier_bytes"] = {"gpu": 0, "ram": 0, "nvme": 0, tier: size}
            out["gpu_bytes"] = size if tier == "gpu" else 0
        else:                       # weights per tier as planned; GPU memory incl. slots, caches, KV
            out["tier_bytes"] = {t: int(self.plan.tiers.get(t, 0)) for t in ("gpu", "ram", "nvme")}
            out["gpu_bytes"] = int(self.plan.used("gpu")) if self.plan.compute_tier == "gpu" else 0
        if self.plan is not None:
            from hypura_hardware import peak_rss_bytes

            # what the process held beyond its start and the plan's RAM (the budget's margin must cover it)
            out["unplanned_ram_bytes"] = peak_rss_bytes() - self.rss_at_start - int(self.plan.used("ram"))
            out["predicted_tps"] = round(self.plan.predicted_tps, 4)
            out["planned_mode"] = self.plan.mode
            out["plan_nvme_bytes_per_token"] = self.plan.nvme_bytes_per_token
        if self.streamer is not None:
            out.update(self.streamer.stats())
        return out


def _aborted(exc: BaseException, cancel: threading.Event | None) -> bool:
    """A decode stopped by Runner.abort() for a cancelled generation (not an error of the model)."""
    return isinstance(exc, DecodeError) and exc.code == 2 and cancel is not None and cancel.is_set()


def _split_prompt_reason(streamer, n_ubatch: int) -> str:
    """One line: the expert cache cannot hold a layer's experts, so prompts go in ubatches of `n_ubatch`."""
    short = streamer.n_expert - streamer.n_slots
    more = short * sum(k.slot for k in streamer.layout.kinds.values()) if streamer.layout is not None else 0
    return (f"the expert cache holds {streamer.n_slots} experts, fewer than a layer's {streamer.n_expert}: prompts "
            f"go in ubatches of {n_ubatch} tokens, and llama.cpp's matmuls group a ubatch's rows per expert, so "
            f"logits can differ in the last bits from --mode resident (whole prompt in one ubatch); about "
            f"{more / 2**20:.0f} MiB more RAM budget holds a whole layer")

"""llama.cpp's sampler chain, built from Ollama-style settings (any object with `SamplerSettings`' fields)."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ._lib import lib
from .errors import check_null
from .model import LlamaModel
from .owned import Owned


class SamplerSettings(Protocol):
    """What a sampler chain is built from (`hypura_engine.SamplingOptions` is one: Ollama's names)."""

    temperature: float           # <= 0: greedy
    top_k: int
    top_p: float
    min_p: float
    seed: int
    repeat_penalty: float
    repeat_last_n: int           # -1: the whole training context; 0: no penalties
    presence_penalty: float
    frequency_penalty: float
    grammar: str | None          # GBNF, root rule "root"


class Sampler(Owned):
    """Owns a llama_sampler chain: penalties → grammar → (greedy | top-k → top-p → min-p → temp → dist)."""

    def __init__(self, model: LlamaModel, opts: SamplerSettings) -> None:
        self.opts = opts
        greedy = opts.temperature <= 0.0
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        self.handle = check_null(lib.llama_sampler_chain_init(params), "could not create a sampler chain")
        self._penalties = None   # owned by the chain; kept to feed it the prompt (accept_history)
        try:
            penalised = opts.repeat_penalty != 1.0 or opts.presence_penalty or opts.frequency_penalty
            if penalised and opts.repeat_last_n != 0:
                last_n = model.n_ctx_train if opts.repeat_last_n < 0 else opts.repeat_last_n
                self._penalties = lib.llama_sampler_init_penalties(model.n_vocab, last_n, opts.repeat_penalty,
                                                                   opts.frequency_penalty, opts.presence_penalty)
                self._add(self._penalties)
            if opts.grammar:
                self._add(lib.llama_sampler_init_grammar(model.vocab, opts.grammar.encode(), b"root"),
                          "invalid grammar for constrained decoding")
            # Plain greedy is an argmax over the logits row (first maximum, as llama.cpp's greedy
            # sampler): done in numpy it skips building a 12-byte candidate per vocabulary entry
            # every token (3 MB for Gemma's 262k vocabulary), which evicts the weights from cache.
            self._argmax = greedy and not (penalised and opts.repeat_last_n != 0) and not opts.grammar
            if greedy:
                self._add(lib.llama_sampler_init_greedy())
            else:
                if opts.top_k > 0:
                    self._add(lib.llama_sampler_init_top_k(opts.top_k))
                if 0.0 < opts.top_p < 1.0:
                    self._add(lib.llama_sampler_init_top_p(opts.top_p, 1))
                if opts.min_p > 0.0:
                    self._add(lib.llama_sampler_init_min_p(opts.min_p, 1))
                self._add(lib.llama_sampler_init_temp(opts.temperature))
                self._add(lib.llama_sampler_init_dist(opts.seed & 0xFFFFFFFF))
        except BaseException:
            self.close()
            raise

    def _add(self, smpl, what: str = "could not create a sampler") -> None:
        lib.llama_sampler_chain_add(self.handle, check_null(smpl, what))

    def sample(self, ctx, idx: int = -1) -> int:
        """Sample from output row idx of the last decode and accept the token."""
        if self._argmax:
            return int(np.argmax(ctx.logits(idx)))
        return int(lib.llama_sampler_sample(self.handle, ctx.handle, idx))

    def accept(self, token: int) -> None:
        lib.llama_sampler_accept(self.handle, token)

    def accept_history(self, tokens) -> None:
        """Feed earlier tokens (the prompt) to the repetition penalties only, as llama.cpp's server
        does: a grammar must not see them (it would reject tokens outside its language and throw)."""
        if self._penalties is not None:
            for tok in tokens:
                lib.llama_sampler_accept(self._penalties, tok)

    def reset(self) -> None:
        lib.llama_sampler_reset(self.handle)

    def _free(self) -> None:
        lib.llama_sampler_free(self.handle)
        self._penalties = None

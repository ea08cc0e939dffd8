"""Draft proposers for speculative decoding: prompt lookup (`NgramDraft`) and a small model (`ModelDraft`).

A drafter sees the generation's token history (`begin` with the prompt, `accept` as tokens are emitted) and
proposes the next few tokens (`propose`). It never decides what is emitted: the target model verifies every
draft on its own logits (`speculative.py`). `open_draft("ngram" | PATH, target)` makes one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

# A distribution over token ids (ascending ids, their probabilities) as `spec_sampling.distribution` gives it.
Distribution = tuple[np.ndarray, np.ndarray]
# What a drafting model asks at each position: (logits, position) -> (token, its distribution or None (greedy)).
DraftChooser = Callable[[np.ndarray, int], tuple[int, "Distribution | None"]]


class Drafter(Protocol):
    kind: str                        # "ngram" | "model"
    name: str

    def begin(self, tokens: Sequence[int]) -> None: ...
    def accept(self, tokens: Sequence[int]) -> None: ...
    def propose(self, k: int, choose: DraftChooser | None = None) -> tuple[list[int], list[Distribution | None]]: ...
    def close(self) -> None: ...


class NgramDraft:
    """Prompt lookup: the tokens that followed the most recent earlier occurrence of the context's last n tokens
    (longest n from `n_max` down to `n_min` first). An index from each n-gram to where its latest occurrence
    ends keeps a proposal O(n_max) whatever the context length."""

    kind = "ngram"
    name = "ngram"

    def __init__(self, n_max: int = 4, n_min: int = 2) -> None:
        if not 1 <= n_min <= n_max:
            raise ValueError(f"ngram sizes {n_min}..{n_max}")
        self.n_min, self.n_max = n_min, n_max
        self.history: list[int] = []
        self._index: dict[int, dict[tuple[int, ...], int]] = {}
        self.draft_s = 0.0            # time spent proposing (for the depth policy's cost of a draft)

    def begin(self, tokens: Sequence[int]) -> None:
        self.history = []
        self._index = {n: {} for n in range(self.n_min, self.n_max + 1)}
        self.accept(tokens)

    def accept(self, tokens: Sequence[int]) -> None:
        h = self.history
        for tok in tokens:
            end = len(h)              # the n-grams ending here now have a continuation: token `tok`
            for n, index in self._index.items():
                if end >= n:
                    index[tuple(h[end - n:end])] = end
            h.append(int(tok))

    def propose(self, k: int, choose: DraftChooser | None = None) -> tuple[list[int], list[Distribution | None]]:
        """Up to k tokens (fewer, or none, where the context has no earlier match); point masses (None)."""
        h = self.history
        if k <= 0:
            return [], []
        for n in range(min(self.n_max, len(h)), self.n_min - 1, -1):
            end = self._index[n].get(tuple(h[len(h) - n:]))
            if end is not None:
                out = h[end:end + k]
                return out, [None] * len(out)
        return [], []

    def close(self) -> None:
        self._index = {}


def check_same_vocab(target, draft, target_name: str = "the target", draft_name: str = "the draft") -> None:
    """Raise ValueError unless `draft` has `target`'s vocabulary, token by token (text and end-of-generation
    marks): a draft's token id must mean what it means to the target."""
    if target.n_vocab != draft.n_vocab:
        raise ValueError(f"draft model {draft_name} has {draft.n_vocab} tokens, {target_name} {target.n_vocab}: "
                         f"a draft must share the target's vocabulary")
    for i in range(target.n_vocab):
        a, b = target.token_text(i), draft.token_text(i)
        if a != b or target.is_eog(i) != draft.is_eog(i):
            raise ValueError(f"draft model {draft_name} does not share the vocabulary of {target_name}: token {i} "
                             f"is {a[:40]!r} there and {b[:40]!r} in the draft"
                             + ("" if a != b else " (end-of-generation in one of them only)"))


class ModelDraft:
    """A small model (resident, llama.cpp's own loading) that shares the target's vocabulary; it keeps its own
    KV cache of the history and decodes token by token after the prompt (so its distributions do not depend on
    how drafts were batched or rejected before)."""

    kind = "model"

    def __init__(self, path: str | os.PathLike, target, n_ctx: int, n_threads: int = 0) -> None:
        from hypura_llama import ContextParams, LlamaContext, LlamaModel, ModelParams

        self.path = Path(path)
        self.name = self.path.stem
        self.model = LlamaModel.load(self.path, ModelParams(n_gpu_layers=-1, load_mode="mmap"))
        try:
            check_same_vocab(target, self.model, draft_name=str(self.path))
            self.ctx = LlamaContext(self.model, ContextParams(n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                                                             n_threads=n_threads))
        except BaseException:
            self.model.close()
            raise
        self.history: list[int] = []
        self.cached: list[int] = []   # tokens whose KV is in the draft's cache
        self.draft_s = 0.0

    def begin(self, tokens: Sequence[int]) -> None:
        self.history = [int(t) for t in tokens]

    def accept(self, tokens: Sequence[int]) -> None:
        self.history.extend(int(t) for t in tokens)

    def _sync(self) -> None:
        """Make the cache hold history[:-1] and the logits be those after history[-1]."""
        h = self.history
        keep = 0
        for a, b in zip(self.cached, h):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(h) - 1)
        if keep < len(self.cached) and not self.ctx.truncate(keep):
            self.ctx.clear()
            keep = 0
        self.cached = self.cached[:keep]
        todo = h[keep:]
        if not self.cached:           # a new prompt: one batch (the same in every run)
            self.ctx.decode(todo, 0)
            self.cached.extend(todo)
            return
        for tok in todo:              # after it: token by token
            self.ctx.decode([tok], len(self.cached))
            self.cached.append(tok)

    def propose(self, k: int, choose: DraftChooser | None = None) -> tuple[list[int], list[Distribution | None]]:
        """k tokens, each chosen by `choose(logits, position)` (greedy argmax without one)."""
        if k <= 0:
            return [], []
        t0 = time.perf_counter()
        if len(self.history) >= self.ctx.n_ctx - k:
            return [], []
        self._sync()
        out: list[int] = []
        dists: list[Distribution | None] = []
        pos = len(self.history)
        for j in range(k):
            logits = self.ctx.logits()
            if choose is None:
                tok, dist = int(np.argmax(logits)), None
            else:
                tok, dist = choose(logits, pos + j)
            out.append(tok)
            dists.append(dist)
            if j + 1 < k:
                self.ctx.decode([tok], len(self.cached))
                self.cached.append(tok)
        self.draft_s += time.perf_counter() - t0
        return out, dists

    def close(self) -> None:
        for attr in ("ctx", "model"):
            obj = getattr(self, attr, None)
            if obj is not None:
                obj.close()
                setattr(self, attr, None)


def open_draft(spec: str, target, n_ctx: int, n_threads: int = 0) -> Drafter:
    """``"ngram"`` (optionally ``"ngram:NMIN-NMAX"``) or the path of a draft GGUF."""
    if spec == "ngram" or spec.startswith("ngram:"):
        if spec == "ngram":
            return NgramDraft()
        lo, _, hi = spec[6:].partition("-")
        try:
            return NgramDraft(n_max=int(hi or lo), n_min=int(lo))
        except ValueError:
            raise ValueError(f"--draft {spec!r}: ngram sizes are ngram:MIN-MAX, e.g. ngram:2-4") from None
    if not Path(spec).is_file():
        raise FileNotFoundError(f"draft model {spec}: no such file")
    return ModelDraft(spec, target, n_ctx, n_threads)

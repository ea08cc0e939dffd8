"""Prefetch: guess the next streamed layer's experts and read them while this layer computes.

Opt-in: measured not to pay on the machines we have (docs/BENCHMARKS.md). Reads wait for the router, so
without a guess the disk idles while a layer computes. At layer L's split the streamer guesses the next
streamed layer's experts — that layer's router (llama.cpp's resident weights) applied to layer L's FFN
input rescaled by the two layers' FFN-norm weights, since the residual stream changes little from one
layer to the next — and reads the guesses it does not hold into slots that layer L is not using, in
4 MiB pieces on their own threads. At the next layer's split, guesses the router did not choose stop at
the next piece (their slots are emptied unless the read finished), and the right ones are waited for
like any read. A guess only moves a read earlier: a wrong one costs disk time and a cache slot, never a
wrong token. A selection served by a prefetch counts as read, not as a cache hit.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hypura_llama import ffi, lib

from ..cache import CacheStats, ExpertCache
from ..loader import OwnedLoad
from .reads import ExpertReads

log = logging.getLogger(__name__)
THREADS = 3
# A prompt ubatch guesses each token's PROMPT_WIDTH × n_used likeliest experts: a prefill computes far longer than
# its reads take, so wider guesses cost spare disk time and cover more of the misses (docs/BENCHMARKS.md, issue 18
# session 6: 2x on the qwen3 shape covered 81% of the misses instead of 67%, stall halved)
PROMPT_WIDTH = 2


def as_f32(t) -> np.ndarray:
    """A resident weight as flat float32: a view of llama.cpp's host F32 memory, else a converted copy."""
    nbytes = int(lib.ggml_nbytes(t))
    if t.type == lib.GGML_TYPE_F32 and t.buffer != ffi.NULL and lib.ggml_backend_buffer_is_host(t.buffer):
        return np.frombuffer(ffi.buffer(ffi.cast("char *", t.data), nbytes), dtype=np.float32)
    raw = bytearray(nbytes)
    lib.ggml_backend_tensor_get(t, ffi.from_buffer(raw), 0, nbytes)
    if t.type == lib.GGML_TYPE_F32:
        return np.frombuffer(raw, dtype=np.float32)
    if t.type == lib.GGML_TYPE_F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return dequantize(np.frombuffer(raw, dtype=np.uint8), GGMLQuantizationType(int(t.type))).astype(np.float32).ravel()


@dataclass
class Router:
    """One layer's router: weights [n_expert, n_embd], optional logit bias and selection (probability) bias."""
    weight: np.ndarray
    bias: np.ndarray | None
    selection_bias: np.ndarray | None


@dataclass
class GuessCounts:
    guesses: int = 0     # experts guessed (decode passes)
    right: int = 0       # ... that the router chose
    reads: int = 0       # speculative reads issued
    abandoned: int = 0   # ... stopped (or failed) because the guess was wrong


@dataclass
class Guess:
    """A speculative read in flight: the slot it fills, its futures, and the event that stops it."""
    slot: int
    futures: list
    cancel: threading.Event


class Prefetcher:
    """Guessed reads for the streamed `layers` (enabled by `setup`)."""

    def __init__(self, layers: list[int], n_expert: int, n_used: int) -> None:
        self.layers, self.n_expert, self.n_used = layers, n_expert, n_used
        self.routers: dict[int, Router] = {}
        self._norm_ratio: dict[int, np.ndarray] = {}   # layer -> next layer's FFN-norm weight / this layer's
        self._next: dict[int, int] = {}
        self._sigmoid = False
        self._in_flight: dict[tuple[int, int], Guess] = {}   # (layer, expert) -> its speculative read
        self._guessed: dict[int, list[int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.counts = GuessCounts()

    @property
    def enabled(self) -> bool:
        return bool(self.routers)

    def setup(self, owned: OwnedLoad, meta: dict) -> None:
        """Take the router and FFN-norm weights of the streamed layers (off if a layer lacks them)."""
        if len(self.layers) < 2:
            return
        arch = meta.get("general.architecture", "")
        self._sigmoid = int(meta.get(f"{arch}.expert_gating_func", 0) or 0) == 2
        routers, gamma = {}, {}
        for layer in self.layers:
            w = owned.resident.get(f"blk.{layer}.ffn_gate_inp.weight")
            g = owned.resident.get(f"blk.{layer}.ffn_norm.weight")
            if w is None or g is None or int(w.ne[1]) != self.n_expert:
                log.info("expert prefetch off: layer %d has no router/FFN-norm weights in the expected shape", layer)
                return
            extra = [owned.resident.get(f"blk.{layer}.{n}") for n in ("ffn_gate_inp.bias", "exp_probs_b.bias")]
            routers[layer] = Router(as_f32(w).reshape(self.n_expert, int(w.ne[0])),
                                    *(None if t is None else as_f32(t) for t in extra))
            gamma[layer] = as_f32(g)
        for layer, nxt in zip(self.layers, self.layers[1:]):
            g = gamma[layer]
            safe = np.where(g != 0, g, 1.0)
            self._norm_ratio[layer] = np.where(g != 0, gamma[nxt] / safe, 0.0).astype(np.float32)
            self._next[layer] = nxt
        self.routers = routers
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="hypura-spec")

    def guess(self, layer: int, x: np.ndarray) -> tuple[int, list[int]] | None:
        """(next streamed layer, its likely experts) from layer `layer`'s FFN input `x`: one token's [n_embd],
        or a batch's [n_tok, n_embd] (then the union of every token's PROMPT_WIDTH × n_used likeliest experts)."""
        nxt = self._next.get(layer)
        if nxt is None:
            return None
        r = self.routers[nxt]
        score = np.atleast_2d(x * self._norm_ratio[layer]) @ r.weight.T      # [n_tok, n_expert]
        if r.bias is not None:
            score = score + r.bias
        if r.selection_bias is not None:   # selection by probability plus a per-expert bias (deepseek2)
            if self._sigmoid:
                prob = 1.0 / (1.0 + np.exp(-score))
            else:
                prob = np.exp(score - score.max(axis=1, keepdims=True))
                prob /= prob.sum(axis=1, keepdims=True)
            score = prob + r.selection_bias
        k = self.n_used if score.shape[0] == 1 else min(self.n_expert, PROMPT_WIDTH * self.n_used)
        if k == self.n_expert:
            return nxt, list(range(self.n_expert))
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        return nxt, sorted(int(e) for e in np.unique(top))

    def speculate(self, layer: int, node, busy: set[int], reads: ExpertReads, cache: ExpertCache,
                  ram_cache: ExpertCache | None, displace: bool = False) -> None:
        """After layer `layer`'s reads: start reading the next layer's guessed experts that are not cached,
        into slots other than `busy` (this layer's, computing next). `node`: the layer's FFN input (one
        token, or a prompt ubatch: the union of its tokens' guesses). `displace`: a guess may evict the
        policy's victim however often it was chosen (a prompt ubatch, whose union is most of a layer)."""
        n_embd = int(node.ne[0])
        n_tok = int(lib.ggml_nbytes(node)) // (4 * n_embd)   # [n_embd, n_tok] or reshaped [n_embd, 1, n_tok]
        if node.type != lib.GGML_TYPE_F32 or not lib.ggml_is_contiguous(node):
            return
        x = np.empty((n_tok, n_embd), dtype=np.float32)
        lib.ggml_backend_tensor_get(node, ffi.cast("void *", x.ctypes.data), 0, x.nbytes)
        guess = self.guess(layer, x if n_tok > 1 else x[0])
        if guess is None:
            return
        nxt, experts = guess
        if n_tok == 1:
            self._guessed[nxt] = experts
        for e in experts:
            if ram_cache is not None and (nxt, e) in ram_cache:
                continue          # a RAM-tier hit is one copy at demand time: no disk time to hide
            slot = cache.reserve(nxt, e, busy, displace)
            if slot is None:      # cached already, or nothing evictable
                continue
            busy.add(slot)
            cancel = threading.Event()
            futs = [self._pool.submit(reads.read, nxt, kind, e, slot, None, cancel) for kind in reads.layout.kinds]
            self._in_flight[(nxt, e)] = Guess(slot, futs, cancel)
            self.counts.reads += 1

    def settle(self, layer: int, chosen: set[int], decode: bool, reads: ExpertReads,
               cache: ExpertCache) -> tuple[list, list[int]]:
        """Before layer `layer` consults the cache: stop every speculative read the router did not ask for
        (wait for it: it stops within a piece; a slot whose read did not finish is emptied) and return the
        futures and slots of the right guesses, to be waited for with the layer's own reads."""
        if layer in self._guessed and decode:
            g = self._guessed.pop(layer)
            self.counts.guesses += len(g)
            self.counts.right += len(chosen.intersection(g))
        if not self._in_flight:
            return [], []
        right = {k: v for k, v in self._in_flight.items() if k[0] == layer and k[1] in chosen}
        wrong = [v for k, v in self._in_flight.items() if k not in right]
        self._in_flight = {}
        for g in wrong:
            g.cancel.set()
        empty = []
        for g in wrong:
            results = []
            for f in g.futures:
                try:
                    results.append(f.result())
                except BaseException:  # noqa: BLE001 - abandoned, or an I/O error a demand read would report
                    results.append(None)
                    if g.slot not in empty:
                        empty.append(g.slot)
            for pending in results:   # a finished wrong guess is still a valid cached expert
                if pending is not None:
                    if g.slot in empty:
                        reads.memory.staging.give_back(pending[1])
                    else:
                        reads.upload(pending)
        if empty:
            self.counts.abandoned += len(empty)
            cache.invalidate(empty)
        return [f for g in right.values() for f in g.futures], [g.slot for g in right.values()]

    def report(self, stats: CacheStats) -> dict:
        """How well the guesses did: share of guessed experts the router chose, speculative reads
        issued, reads that served a selection, and reads stopped because the guess was wrong."""
        c, used = self.counts, stats.prefetched
        return {"enabled": self.enabled, "predictor": "next layer's router on this layer's FFN input",
                "guesses": c.guesses, "accuracy": round(c.right / c.guesses, 4) if c.guesses else 0.0,
                "reads": c.reads, "used": used, "abandoned": c.abandoned,
                "misses_covered": round(used / (used + stats.misses), 4) if used else 0.0}

    def close(self, reads: ExpertReads | None) -> None:
        """Stop the reads in flight and the threads."""
        for g in self._in_flight.values():
            g.cancel.set()
        if reads is not None:
            reads.drain(f for g in self._in_flight.values() for f in g.futures)
        self._in_flight = {}
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

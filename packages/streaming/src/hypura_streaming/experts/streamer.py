"""The expert streamer: the eval callback that makes each layer's chosen experts resident.

The eval filter notes the router's top-k tensor at `ffn_moe_topk-N` (no split: fused top-k kernels stay
intact) and splits at `ffn_norm-N (reshaped)`, the last node before the first expert matmul. There the
streamer reads the chosen ids (router.py), makes exactly those experts resident (a cache over (layer,
expert), cache.py: a layer's slots are never evicted while it runs), and rewrites the ids in place to
slot numbers.

Two cache tiers when the cache is on a GPU: the device cache (`n_slots` experts in VRAM) and behind it a
RAM cache (`ram_slots` experts in pinned host memory, its own ExpertCache). A device miss that hits in
RAM is one upload; a miss in both is read from NVMe into pinned staging, uploaded, and kept in RAM. (The
RAM tier also works with a host cache, for tests: then it is a second copy in RAM.)

Staged reads (CPU, stages.py). Only the kind of the layer's first expert matmul (up, or the fused gate_up)
is waited for at that split; the other kinds are read while the earlier matmuls compute and waited for
at the split right after the matmul before theirs. This starts once a layer's graph has shown the order
of its expert matmuls (one pass with every split on); a kind whose matmul comes while its reads are
pending fails the pass: never a token computed from half-read experts.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict

from hypura_llama import NOTE, SPLIT, LlamaModel, ModelParams

from ..base import Streamer
from ..cache import ExpertCache
from ..directio import StreamError
from ..loader import OwnedLoad
from ..spec import StreamSpec
from .layout import ExpertLayout
from .memory import ExpertMemory
from .placing import place
from .prefetch import Prefetcher
from .reads import ExpertReads
from .report import expert_stats
from .router import TopK
from .stages import (DEFAULT_SPLIT_ARCHS, SPLIT_AFTER, SPLIT_BEFORE_EXPERTS, KindOrder, Stage, StagedReads,
                     base_kind)
from .warm import preload

log = logging.getLogger(__name__)
PROMPT_GUESSES_FROM = 16   # prompt ubatches this long read their next layer's guessed experts early
UBATCH_ANY = 512        # llama.cpp's default ubatch: the limit when a layer's experts all fit the cache


class ExpertStreamer(Streamer):
    """Streams the routed experts of `spec.layers` through a cache of `spec.n_slots` experts."""

    def __init__(self, spec: StreamSpec, device=None, io_threads: int = 8, direct_io: bool = True,
                 policy: str = "lfu", prefetch: bool = False, eval_filter=None, prompt_guesses: bool = True,
                 repacked_dir=None) -> None:
        """`device`: a GPU `hypura_llama.Device` whose memory holds the cache (None: host RAM).
        `spec.ram_slots`: experts in the RAM cache behind the device cache (0: none). `policy`: "lfu" |
        "lru". `prefetch`: guess and read the next layer's experts while a layer computes in decode passes
        (off by default: it did not pay where measured, docs/BENCHMARKS.md). `prompt_guesses`: the same for
        prompt ubatches of PROMPT_GUESSES_FROM tokens or more, whose union of guesses covers most of what
        the next layer reads (on by default). `repacked_dir`: where the experts the CPU keeps repacked are
        stored converted once (repacked_file.py; None: converted as they are read)."""
        super().__init__(spec, device, io_threads, direct_io, eval_filter)
        self.policy = policy
        self.n_slots = spec.n_slots
        self.ram_slots = spec.ram_slots
        self.cache = ExpertCache(self.n_slots, policy)
        self.ram_cache: ExpertCache | None = None
        self.prefetch = prefetch
        self.repacked_dir = repacked_dir
        self.repacked_file = None
        self.repacked_file_reason = ""
        self.prompt_guesses = prompt_guesses and device is None   # (measured on the CPU only)
        self.n_expert = 0
        self.n_used = 0
        self.layout: ExpertLayout | None = None
        self.memory: ExpertMemory | None = None
        self.reads: ExpertReads | None = None
        self.guesses = Prefetcher(self.layers, 0, 0)
        f = self
        self._rule_topk = f._add_rule("ffn_moe_topk-", "", NOTE, layers=self.layers)
        self._rule_experts = f._add_rule("ffn_norm-", " (reshaped)", SPLIT, layers=self.layers)
        on_cpu = device is None
        # the splits after each expert matmul (rule -> the kind it follows) and after the down matmul
        self._rules_after = {f._add_rule(f"ffn_moe_{n}-", "", SPLIT, layers=self.layers): kind
                             for n, kind in SPLIT_AFTER.items()} if on_cpu else {}
        self._rule_moe_out = f._add_rule("ffn_moe_out-", "", SPLIT, layers=self.layers) if on_cpu else -1
        self._order = KindOrder(frozenset())
        self._staged: StagedReads | None = None
        self._topk: dict[int, object] = {}
        self.routing: dict[int, Counter] = defaultdict(Counter)
        self.warm: dict = {}
        # accounting (report.py)
        self.staged_reads = 0        # expert reads waited for at a split after an earlier matmul
        self.expert_bytes_read = 0
        self.ram_bytes_uploaded = 0
        self.decode_bytes = 0        # bytes read during single-token passes (speculative reads included)
        self.needed_bytes = 0        # ... of experts a decode pass needed and did not hold (misses + prefetched)
        self.decode_passes = 0
        self.decode_stall_s = 0.0    # ... of stall_s, in single-token passes
        self.decode_callback_s = 0.0  # the decode thread's own time in its callbacks (stalls excluded), ditto
        self._decode_pass = -1
        self._pass_is_decode = False
        self._mark = 0               # reader.bytes_read at the end of the last split

    # -- loading --------------------------------------------------------------------------
    def load_model(self, params: ModelParams | None = None) -> LlamaModel:
        params = params or self.model_params()
        owned = self._owned_load()
        try:
            model = owned.load(params)
        except BaseException:
            owned.close()
            raise
        return self.attach(owned, model)

    def attach(self, owned: OwnedLoad, model: LlamaModel) -> LlamaModel:
        """Take over the streamed experts of `model`, just loaded by `owned` (closed here; on an error the model
        too): lay them out, allocate the cache and re-point them into it."""
        try:
            meta = model.metadata()
            arch = meta.get("general.architecture", "")
            if arch in SPLIT_BEFORE_EXPERTS:
                self._add_rule(*SPLIT_BEFORE_EXPERTS[arch], SPLIT, layers=self.layers)
            elif arch not in DEFAULT_SPLIT_ARCHS:
                raise ValueError(f"{self.path}: expert streaming does not support architecture {arch!r} yet (where "
                                 "its MoE FFN starts is not known; use --mode resident or dense-stream)")
            self._place(owned)
            self.guesses = Prefetcher(self.layers, self.n_expert, int(
                meta.get(f"{meta.get('general.architecture')}.expert_used_count", 0)))
            if self.prefetch or self.prompt_guesses:
                self.guesses.setup(owned, meta)
        except BaseException:
            owned.close()
            model.close()
            raise
        owned.close()
        self.n_used = self.guesses.n_used
        if not 0 < self.n_used <= self.n_slots:
            model.close()
            raise ValueError(f"{self.path}: the expert cache ({self.n_slots} slots) must hold at least the "
                             f"{self.n_used} experts one token uses")
        self._loaded()
        self._mark = self.reader.bytes_read
        log.info("expert streaming: %d layers, %d experts each, cache of %d slots (%.1f MiB), prefetch %s",
                 len(self.layers), self.n_expert, self.n_slots, self.cache_bytes / 2**20, self.guesses.enabled)
        return model

    def _place(self, owned: OwnedLoad) -> None:
        place(self, owned)

    @property
    def cache_bytes(self) -> int:
        return self.memory.cache_bytes if self.memory is not None else 0

    @property
    def in_place_fraction(self) -> float:
        """Share of the streamed expert bytes read straight into their host slots (0 on a GPU)."""
        return self.layout.in_place_fraction if self.layout is not None else 0.0

    @property
    def max_ubatch(self) -> int:
        """Largest ubatch whose union of experts always fits the cache: any (llama.cpp's default 512) when the
        cache holds a whole layer's experts, else as many tokens as the cache holds selections of."""
        if 0 < self.n_expert <= self.n_slots:
            return UBATCH_ANY
        return max(1, self.n_slots // max(1, self.n_used))

    # -- warm start -----------------------------------------------------------------------
    def routing_counts(self) -> dict[int, dict[int, int]]:
        """How often each (layer, expert) was chosen in this run (prompt and decode)."""
        return {layer: dict(c) for layer, c in self.routing.items()}

    def warm_start(self, counts: dict[int, dict[int, int]]) -> dict:
        """Seed the caches from earlier runs' routing counts (warm.py); these reads count as loading."""
        t0 = time.perf_counter()
        in_cache, in_ram = preload(self, counts)
        self._loaded()
        self._mark = self.reader.bytes_read
        self.warm = {"warm_start_experts": in_cache, "warm_start_ram_experts": in_ram,
                     "warm_start_s": round(time.perf_counter() - t0, 3)}
        return self.warm

    # -- staged reads -------------------------------------------------------------------------
    @property
    def late_reads_pending(self) -> bool:
        """A layer's later kinds are still being read (each waited for at the split before its matmul)."""
        return self._staged is not None

    @property
    def matmul_order(self) -> dict[int, tuple[str, ...]]:
        """Per layer, the order of its expert matmuls as its graph showed it (stages.py)."""
        return dict(self._order.known)

    def stop_switching_on_matmul_splits(self) -> None:
        """Negative control only: from now on the splits after the expert matmuls are never switched on
        again, so staged reads are not waited for there (the check after the down matmul must then fail
        the pass)."""
        self._rules_after = {}

    def _wait_stage(self, futures: list) -> None:
        st = self._staged
        t0 = time.perf_counter()
        try:
            self.reads.await_fill(futures, st.slots, st.ram_slots)
        except BaseException:
            self._staged = None
            self.reads.drain(st.all_futures())
            raise
        finally:
            self._stalled(time.perf_counter() - t0)
        self._count_bytes()

    def _finish_staged(self) -> None:
        """Wait for every read still staged (an aborted pass, or one about to fail): whole, or forgotten."""
        if self._staged is not None:
            self._wait_stage(self._staged.all_futures())
            self._staged = None

    def _after_matmul(self, layer: int, kind: str) -> None:
        """At the split after `layer`'s `kind` matmul: wait for the kind whose matmul comes next."""
        self._order.saw(layer, kind)
        st = self._staged
        if st is None:
            return
        try:
            if st.layer != layer:
                raise StreamError(f"layer {st.layer}: its experts were still being read at layer {layer}'s "
                                  f"{kind} matmul (unexpected graph order)")
            stage = st.due_after(kind)
        except StreamError:
            self._finish_staged()   # whole, or their slots forgotten; the pass fails either way
            raise
        if stage is not None:
            self._wait_stage(stage.futures)
        if st.done:
            self._staged = None

    def _arm(self, layer: int, on: bool) -> None:
        """Switch the splits after `layer`'s expert matmuls on or off. On for every layer until its graph has
        been seen once; from then on only in a pass that stages reads of that layer, so layers that read
        nothing pay no extra splits."""
        for r in (*self._rules_after, self._rule_moe_out):
            self.eval_filter.set_layer(r, layer, on)

    def _stalled(self, dt: float) -> None:
        """The decode thread waited `dt` s for reads (counted for decode passes on their own too)."""
        self.stall_s += dt
        if self._pass_is_decode:
            self.decode_stall_s += dt

    def _count_bytes(self) -> None:
        """Bytes read since the last split, counted for the current pass."""
        now = self.reader.bytes_read
        if self._pass_is_decode:
            self.decode_bytes += now - self._mark
        self._mark = now

    # -- the eval callback ----------------------------------------------------------------
    def _on_node(self, tensor, ask: bool, rule: int, layer: int) -> None:
        if rule == self._rule_topk:
            self._topk[layer] = tensor
            return
        t0, stalled = time.perf_counter(), self.decode_stall_s
        try:
            self._on_split(tensor, rule, layer)
        finally:
            if self._pass_is_decode:
                self.decode_callback_s += time.perf_counter() - t0 - (self.decode_stall_s - stalled)

    def _on_split(self, tensor, rule: int, layer: int) -> None:
        if rule in self._rules_after:
            self._after_matmul(layer, self._rules_after[rule])
        elif rule == self._rule_moe_out:
            self._order.closed(layer)
            if self._staged is not None and self._staged.layer == layer:
                self._finish_staged()   # whole, or their slots forgotten; the pass fails either way
                raise StreamError(f"layer {layer}: its experts were not all waited for before its down matmul")
            self._arm(layer, False)
        else:
            self._fill(tensor, layer)

    def _fill(self, ffn_input, layer: int) -> None:
        """At the split before `layer`'s expert matmuls: make its chosen experts resident, rewrite the ids."""
        first_of_pass = self._start_layer(layer)
        if self._staged is not None:
            held = self._staged.layer
            self._finish_staged()   # from an aborted pass: its reads are whole once finished
            if not first_of_pass:
                raise StreamError(f"layer {held}: its experts were not all waited for before its expert matmuls")
        self._order.restart(layer)
        node = self._topk.get(layer)
        if node is None:
            raise StreamError(f"layer {layer}: the router's top-k node was not seen before the expert matmuls")
        n_tok = int(node.ne[1])
        if first_of_pass:   # a prompt chunk narrows to its output rows at the last layer: decide here
            self._pass_is_decode = n_tok == 1
        if n_tok == 0:  # e.g. the last layer of a prompt chunk whose outputs are not needed
            return
        topk = TopK(node)
        chosen = topk.chosen(layer, self.n_expert)
        self.routing[layer].update(topk.flat)
        reads, kinds = self.reads, self.layout.kinds
        guessed_futs, guessed_slots = self.guesses.settle(layer, set(chosen), self._pass_is_decode, reads, self.cache)
        used_before = self.cache.stats.prefetched
        slot_of, to_read = self.cache.lookup(layer, chosen)
        n_prefetched = self.cache.stats.prefetched - used_before
        from_ram: list[tuple[int, int, int]] = []
        from_disk: list[tuple[int, int, int | None]] = [(e, s, None) for e, s in to_read]
        if self.ram_cache is not None and to_read:
            ram_of, ram_read = self.ram_cache.lookup(layer, [e for e, _ in to_read])
            missing = {e for e, _ in ram_read}
            from_ram = [(e, s, ram_of[e]) for e, s in to_read if e not in missing]
            from_disk = [(e, s, ram_of[e]) for e, s in to_read if e in missing]
        # kind by kind once this layer's graph has shown the order of its expert matmuls (stages.py)
        order = self._order.of(layer) if self.device is None and from_disk else None
        first = (order[0],) if order else tuple({base_kind(k) for k in kinds})

        def submit(wanted) -> list:
            return [reads.submit(layer, kind, e, s, rs) for e, s, rs in from_disk for kind in kinds
                    if base_kind(kind) in wanted]
        futs = submit(first)
        later = [Stage(k, submit((k,))) for k in order[1:2]] if order else []   # queued behind the first kind
        futs += guessed_futs              # this layer's right guesses, still reading
        t0 = time.perf_counter()
        filling, ram_filling = [s for _, s in to_read] + guessed_slots, [rs for _, _, rs in from_disk]
        try:
            for e, s, rs in from_ram:   # while the NVMe reads run: RAM-cache hits go up directly
                for kind in kinds:
                    self.memory.deliver(layer, kind, self.memory.ram_ptr(rs, kind), s)
            reads.await_fill(futs, filling, ram_filling)
        except BaseException:
            reads.drain([*futs, *(f for st in later for f in st.futures)])
            reads.forget(filling, ram_filling)
            raise
        finally:
            self._stalled(time.perf_counter() - t0)
        if order:   # the rest is read while the earlier matmuls compute; each waited for before its own
            later += [Stage(k, submit((k,))) for k in order[1 + len(later):]]
            self._staged = StagedReads(layer, order, later, [s for _, s, _ in from_disk], ram_filling)
            self.staged_reads += sum(len(st.futures) for st in later)
            self._arm(layer, True)
        expert = self.layout.expert_bytes(layer)   # bytes of one expert of this layer, every kind
        self.expert_bytes_read += (len(from_disk) + len(guessed_slots)) * expert
        if self._pass_is_decode:   # what the token rate pays (a prompt chunk reads the union of its tokens')
            self.needed_bytes += (len(from_disk) + n_prefetched) * expert
            if self._decode_pass != self.passes:
                self._decode_pass = self.passes
                self.decode_passes += 1
        self.ram_bytes_uploaded += len(from_ram) * expert
        topk.rewrite(slot_of, self.n_expert)
        if self.guesses.enabled and (self.prefetch if self._pass_is_decode else n_tok >= PROMPT_GUESSES_FROM
                                     and self.prompt_guesses):
            self.guesses.speculate(layer, ffn_input, set(slot_of.values()), reads, self.cache, self.ram_cache,
                                   displace=not self._pass_is_decode)
        self._count_bytes()   # since the last split: this layer's reads and the guesses settled here

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        return expert_stats(self)

    def close(self) -> None:
        if self._staged is not None:
            self.reads.drain(self._staged.all_futures())
            self._staged = None
        self.guesses.close(self.reads)
        self.reader.close()
        self.file_map.close()
        if self.memory is not None:
            self.memory.close()

"""Expert streaming for MoE models: only the experts the router picks are read from NVMe.

Each streamed layer's fused `ffn_{gate,up,down,gate_up}_exps` tensors are re-pointed (before the
first graph is built) into one shared cache region per kind with `ne[2] = n_slots`, so llama.cpp's
MUL_MAT_ID indexes cache slots instead of experts. The eval filter notes the router's top-k
tensor at `ffn_moe_topk-N` (no split: fused top-k kernels stay intact) and splits at
`ffn_norm-N (reshaped)`, the last node before the first expert matmul. There the streamer reads
the chosen ids, makes exactly those experts resident (a cache over (layer, expert), reads of
one expert's `nb[2]` contiguous bytes per tensor), and rewrites the ids in place to slot numbers —
after `ffn_moe_weights-N` consumed the real ids. A layer's slots are never evicted while it runs
(frequency-aware eviction, cache.py).

On the CPU two things keep the two cores computing rather than copying, and the disk busier:
- Experts are read straight into their cache slots (`_place_host_slots`): no staging copy.
- Only the gate/up experts are waited for at that split; the down experts are read while the gate/up
  matmuls compute and waited for at the split right after them (`ffn_moe_gate_up-N`/`ffn_moe_gate-N`,
  `_finish_late`). This starts only once a layer's graph has shown both that split and the one after
  its down matmul (`ffn_moe_out-N`), which fails the pass if the down reads were not waited for.

Two cache tiers when the cache is on a GPU: the device cache (`n_slots` experts in VRAM) and behind it a
RAM cache (`ram_slots` experts in pinned host memory, its own frequency-aware ExpertCache). A device miss
that hits in RAM is one upload; a miss in both is read from NVMe into pinned staging, uploaded, and kept
in RAM. (The RAM tier also works with a host cache, for tests: then it is a second copy in RAM.)

Prefetch (opt-in: measured not to pay on the machines we have, docs/BENCHMARKS.md). Reads wait for the
router, so without a guess the disk idles while a layer computes. At layer
L's split the streamer guesses the next streamed layer's experts — that layer's router (llama.cpp's resident
weights) applied to layer L's FFN input rescaled by the two layers' FFN-norm weights, since the residual
stream changes little from one layer to the next — and reads the guesses it does not hold into slots that
layer L is not using, in 4 MiB pieces on their own threads. At the next layer's split, guesses the router
did not choose stop at the next piece (their slots are emptied unless the read finished), and the right
ones are waited for like any read. A guess only moves a read earlier: a wrong one costs disk time and a
cache slot, never a wrong token. A selection served by a prefetch counts as read, not as a cache hit.
"""
from __future__ import annotations

import ctypes
import logging
import queue
import re
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterable

import numpy as np

from hypura_llama import NOTE, SPLIT, BufferType, EvalFilter, LlamaModel, ModelParams, ffi, lib

from .cache import ExpertCache
from .directio import ALIGN, DirectReader, StreamError, align_down, align_up, aligned_span
from .loader import AlignedBuffer, OwnedLoad

log = logging.getLogger(__name__)
EXPS = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.(\w+)$")
SPEC_CHUNK = 4 << 20    # speculative reads go in pieces this size: a wrong guess stops within one piece
SPEC_THREADS = 3
UBATCH_ANY = 512        # llama.cpp's default ubatch: the limit when a layer's experts all fit the cache
HOST_SLOT_PAD = ALIGN   # bytes a host cache slot has beyond one expert of one kind (_place_host_slots)


class _Abandoned(Exception):
    """A speculative read stopped because the router chose other experts."""


def _f32(t) -> np.ndarray:
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


def _memmove(dst, src, n: int) -> None:
    ctypes.memmove(int(ffi.cast("uintptr_t", dst)), int(ffi.cast("uintptr_t", src)), n)


class _PinnedStage:
    """A page-aligned window of a pinned host buffer (O_DIRECT destination, DMA source)."""

    def __init__(self, buffer, size: int) -> None:
        self.buffer = buffer
        start = -buffer.base % 4096
        self.view = buffer.host_view(start, size)
        self.ptr = ffi.cast("char *", buffer.base + start)

    def close(self) -> None:
        self.view.release()
        self.buffer.close()


class ExpertStreamer:
    """Streams the routed experts of `layers` through a cache of `n_slots` experts."""

    def __init__(self, path, layers: Iterable[int], n_slots: int, io_threads: int = 8,
                 direct_io: bool = True, device=None, ram_slots: int = 0, policy: str = "lfu",
                 prefetch: bool = False) -> None:
        """`device`: a GPU `hypura_llama.Device` whose memory holds the cache (None: host RAM).
        `ram_slots`: experts in the RAM cache behind the device cache (0: none). `policy`: "lfu" | "lru".
        `prefetch`: guess and read the next layer's experts while a layer computes (off by default: it did
        not pay where measured, docs/BENCHMARKS.md)."""
        self.device = device
        self._vram = None
        self._kind_tensor: dict[str, object] = {}
        self.path = str(path)
        self.layers = sorted(set(int(x) for x in layers))
        if not self.layers:
            raise ValueError("expert streaming needs at least one MoE layer to stream")
        self.policy = policy
        self.cache = ExpertCache(n_slots, policy)
        self.n_slots = n_slots
        self.ram_slots = max(0, int(ram_slots))
        self.l2: ExpertCache | None = None
        self._l2_mem = None          # pinned host Buffer (device) or AlignedBuffer (host)
        self._l2_base = None
        self._l2_stride = 0
        self.ram_bytes_uploaded = 0
        self._decode_bytes = 0       # bytes read during single-token passes (speculative reads included)
        self._needed_bytes = 0       # ... of experts a decode pass needed and did not hold (misses + prefetched)
        self._decode_passes = 0
        self._decode_pass = -1
        self._pass_is_decode = False
        self._mark = 0               # reader.bytes_read at the end of the last split
        self.prefetch = prefetch
        self._look: dict[int, tuple] = {}      # layer -> (router [n_expert, n_embd], bias, probs bias)
        self._ratio: dict[int, np.ndarray] = {}  # layer -> next layer's FFN-norm weight / this layer's
        self._next: dict[int, int] = {}
        self._sigmoid = False
        self._spec: dict[tuple[int, int], tuple[int, list, threading.Event]] = {}  # (layer, e) -> slot, futures
        self._guessed: dict[int, list[int]] = {}
        self._spec_pool: ThreadPoolExecutor | None = None
        self._pf = {"guesses": 0, "right": 0, "reads": 0, "abandoned": 0}
        self.reader = DirectReader(self.path, threads=io_threads, direct=direct_io)
        self._pos = {layer: k for k, layer in enumerate(self.layers)}
        self.eval_filter = EvalFilter(self._on_node)
        self._r_topk = self.eval_filter.add_rule("ffn_moe_topk-", "", NOTE, layers=self.layers)
        self._r_fill = self.eval_filter.add_rule("ffn_norm-", " (reshaped)", SPLIT, layers=self.layers)
        # On the CPU a layer's down experts are read while its gate/up matmuls compute (_finish_late):
        # split after them, at the fused gate_up matmul or after the separate gate matmul (which follows
        # the up matmul). llama.cpp names that node "ffn_moe_gate_up-N" / "ffn_moe_gate-N", or with
        # "_scaled" when the layer has per-expert scales (the mul by the scale carries the name).
        self._r_gate = tuple(self.eval_filter.add_rule(f"ffn_moe_{n}-", "", SPLIT, layers=self.layers)
                             for n in ("gate_up", "gate_up_scaled", "gate", "gate_scaled")) if device is None else ()
        # and the MoE output (after the down matmul) checks that the down experts were waited for
        self._r_out = self.eval_filter.add_rule("ffn_moe_out-", "", SPLIT, layers=self.layers) if device is None else -1
        self._gate_seen: set[int] = set()    # layers whose graph showed the split after the gate/up matmuls
        self._out_seen: set[int] = set()     # ... and the one after the down matmul
        self._late = None                    # (layer, futures, slots, RAM-tier slots) of down reads
        self._late_reads = 0
        self._ids: dict[int, object] = {}
        self.kinds: dict[str, dict] = {}          # kind -> {stride, slot size, region offset, RAM-tier offset}
        self._in_place: dict[tuple[int, str], tuple[bool, ...]] = {}   # (layer, kind) -> per part: read in place
        self._shift: dict[tuple[int, str], int] = {}   # (layer, kind) -> its tensor's start within a host slot
        # (layer, kind) -> parts of one expert: [(file offset of the source tensor, bytes per expert)]
        self.expert_src: dict[tuple[int, str], tuple[tuple[int, int], ...]] = {}
        self.n_expert = 0
        self.n_used = 0
        self.region: AlignedBuffer | None = None
        self.buffer = None
        self._side_bufs: list = []
        self._warm: dict = {}
        self._staging: queue.Queue = queue.Queue()
        self._staging_bufs: list[AlignedBuffer] = []
        self._staging_bytes = 0
        self._last_k = 1 << 30
        self.passes = 0
        self.stall_s = 0.0
        self.routing: dict[int, Counter] = defaultdict(Counter)
        self._load_bytes = 0
        self.expert_bytes_read = 0

    def _is_streamed(self, name: str) -> bool:
        m = EXPS.match(name)
        return bool(m) and int(m.group(1)) in self._pos

    # -- loading --------------------------------------------------------------------------
    def model_params(self) -> ModelParams:
        overrides = ()
        if self.device is not None:  # streamed experts: host allocations never touched, no VRAM
            layers = "|".join(str(x) for x in self.layers)
            overrides = ((rf"^blk\.({layers})\.ffn_(gate|up|down|gate_up)_exps\.weight$", BufferType.cpu()),)
        # no_host: the CPU override must be plain (never touched) host memory, not llama.cpp's pinned
        # host buffer type, which would pin and fill the whole streamed part in RAM.
        return ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False, overrides=overrides,
                           no_host=self.device is not None)

    def load_model(self, params: ModelParams | None = None) -> LlamaModel:
        params = params or self.model_params()
        owned = OwnedLoad(self.path, self.reader, self._is_streamed)
        try:
            model = owned.load(params)
            self._layout(owned)
            self._setup_guess(owned, model.metadata())
        except BaseException:
            owned.close()
            if "model" in locals():
                model.close()
            raise
        owned.close()
        self.n_used = int(model.metadata().get(f"{model.metadata().get('general.architecture')}.expert_used_count", 0))
        if not 0 < self.n_used <= self.n_slots:
            model.close()
            raise ValueError(f"{self.path}: the expert cache ({self.n_slots} slots) must hold at least the "
                             f"{self.n_used} experts one token uses")
        self._load_bytes = self._mark = self.reader.bytes_read
        self.reader.clock.busy_s = 0.0
        log.info("expert streaming: %d layers, %d experts each, cache of %d slots (%.1f MiB), prefetch %s",
                 len(self.layers), self.n_expert, self.n_slots, self.cache_bytes / 2**20, bool(self._look))
        return model

    def _setup_guess(self, owned: OwnedLoad, meta: dict) -> None:
        """Router and FFN-norm weights of the streamed layers, for guessing the next layer's experts."""
        if not self.prefetch or len(self.layers) < 2:
            return
        arch = meta.get("general.architecture", "")
        self._sigmoid = int(meta.get(f"{arch}.expert_gating_func", 0) or 0) == 2
        look, gamma = {}, {}
        for layer in self.layers:
            w = owned.resident.get(f"blk.{layer}.ffn_gate_inp.weight")
            g = owned.resident.get(f"blk.{layer}.ffn_norm.weight")
            if w is None or g is None or int(w.ne[1]) != self.n_expert:
                log.info("expert prefetch off: layer %d has no router/FFN-norm weights in the expected shape", layer)
                return
            extra = [owned.resident.get(f"blk.{layer}.{n}") for n in ("ffn_gate_inp.bias", "exp_probs_b.bias")]
            look[layer] = (_f32(w).reshape(self.n_expert, int(w.ne[0])), *(None if t is None else _f32(t) for t in extra))
            gamma[layer] = _f32(g)
        for layer, nxt in zip(self.layers, self.layers[1:]):
            g = gamma[layer]
            safe = np.where(g != 0, g, 1.0)
            self._ratio[layer] = np.where(g != 0, gamma[nxt] / safe, 0.0).astype(np.float32)
            self._next[layer] = nxt
        self._look = look
        self._spec_pool = ThreadPoolExecutor(SPEC_THREADS, thread_name_prefix="hypura-spec")

    def _layout(self, owned: OwnedLoad) -> None:
        per_layer: dict[int, dict[str, object]] = defaultdict(dict)
        for name, t in owned.streamed.items():
            layer, kind, what = EXPS.match(name).groups()
            if what != "weight":
                raise ValueError(f"{self.path}: tensor {name}: per-expert side tensors are not supported by "
                                 "expert streaming (use --mode dense-stream or resident)")
            per_layer[int(layer)][kind] = (name, t)
        for layer in self.layers:
            if not per_layer.get(layer):
                raise ValueError(f"{self.path}: layer {layer} has no routed expert tensors (blk.{layer}.ffn_*_exps)")
        for layer, kinds in per_layer.items():
            for kind, (name, t) in kinds.items():
                n_exp, nb2 = int(t.ne[2]), int(t.nb[2])
                if n_exp < 2 or t.ne[3] != 1 or nb2 * n_exp != owned.index.tensors[name].size:
                    raise ValueError(f"{self.path}: tensor {name} is not a fused [*, *, n_expert] expert tensor "
                                     f"(ne={list(t.ne)}, nb={list(t.nb)})")
                if self.n_expert and n_exp != self.n_expert:
                    raise ValueError(f"{self.path}: tensor {name} has {n_exp} experts, others {self.n_expert}")
                self.n_expert = n_exp
                k = self.kinds.setdefault(kind, {"stride": nb2})
                if k["stride"] != nb2:
                    raise ValueError(f"{self.path}: tensor {name}: expert size {nb2} differs from other layers' "
                                     f"{k['stride']} (mixed quantization types are not supported yet)")
                info = owned.index.tensors[name]
                self.expert_src[(layer, kind)] = info.parts or ((info.offset, nb2),)
        n_all = self.n_expert * len(self.layers)
        if self.n_slots > n_all:
            self.n_slots = n_all
            self.cache = ExpertCache(self.n_slots, self.policy)
        pos = 0
        for kind in sorted(self.kinds):   # a host slot is padded by one page: see _place_host_slots
            k = self.kinds[kind]
            k["slot"] = k["stride"] + (HOST_SLOT_PAD if self.device is None else 0)
            k["offset"] = pos
            pos += align_up(self.n_slots * k["slot"])
        if self.device is None:
            self.region = AlignedBuffer(pos)
            self.buffer = lib.ggml_backend_cpu_buffer_from_ptr(self.region.ptr, self.region.size)
            base = self.region.ptr
        else:  # + 512 B: quantized batched matmuls read up to 512 bytes past an expert
            self._vram = self.device.buffer_type.allocate(pos + 512)
            self._vram.clear(0)
            self.buffer = self._vram.handle
            base = ffi.cast("char *", self._vram.base)
        for layer, kinds in per_layer.items():
            for kind, (name, t) in kinds.items():
                shift = self._place_host_slots(layer, kind)
                t.buffer = self.buffer
                t.data = base + self.kinds[kind]["offset"] + shift
                t.ne[2] = self.n_slots
                t.nb[2] = self.kinds[kind]["slot"]
                t.nb[3] = self.n_slots * t.nb[2]
                self._kind_tensor[kind] = t
        self._l2_stride = 0
        for kind in sorted(self.kinds):
            self.kinds[kind]["l2_offset"] = self._l2_stride
            self._l2_stride += self.kinds[kind]["stride"]
        self.ram_slots = min(self.ram_slots, max(0, n_all - self.n_slots))
        if self.ram_slots:
            size = self.ram_slots * self._l2_stride
            if self.device is None:
                self._l2_mem = AlignedBuffer(size)
                self._l2_base = self._l2_mem.ptr
            else:
                self._l2_mem = self.device.host_buffer_type.allocate(size)
                self._l2_base = ffi.cast("char *", self._l2_mem.base)
            self.l2 = ExpertCache(self.ram_slots, self.policy)
        self._resize_neutral_side_tensors(owned)
        # one expert of one kind, every staged part at its own place (a composed gate_up has two); parts read
        # in place need only their partial first and last pages (RAM-tier-only reads are always staged)
        largest = 2 * ALIGN
        for key, parts in self.expert_src.items():
            staged = parts if self.l2 is not None else [part for part, ok in zip(parts, self._in_place[key]) if not ok]
            largest = max(largest, sum(align_up(nb) + ALIGN for _, nb in staged))
        for _ in range(self.reader.pool._max_workers):
            if self.device is None:
                buf = AlignedBuffer(largest)
            else:
                buf = _PinnedStage(self.device.host_buffer_type.allocate(largest + 4096), largest)
            self._staging_bufs.append(buf)
            self._staging.put(buf)
        self._staging_bytes = len(self._staging_bufs) * largest

    def _place_host_slots(self, layer: int, kind: str) -> int:
        """Where layer `layer`'s `kind` tensor starts within its host slots, so its experts are read in place.

        O_DIRECT reads whole pages into page-aligned memory, so a byte lands at the same offset within its
        page as it has within the file's page. GGUF aligns tensors to 32 bytes only: an expert starts at
        some misalignment m (the same for every expert of a tensor when an expert is a whole number of
        pages). Host slots are one page longer than an expert and each layer's tensor starts m bytes into
        them (its own `data`; `nb[2]` is the padded slot size, which MUL_MAT_ID honours), so the expert's
        whole pages are read straight into the slot and only its first and last partial pages go through
        staging: no 99 MB copy per Mixtral expert on the CPU that must then compute. A part that cannot be
        placed so (not whole pages, or the second part of a composed gate_up at another misalignment) is
        read into staging and copied, as on a GPU (where every part is staged and the shift is 0)."""
        host = self.device is None
        shift = self.expert_src[(layer, kind)][0][0] % ALIGN if host else 0
        flags, pos = [], 0
        for offset, nb in self.expert_src[(layer, kind)]:
            flags.append(host and nb % ALIGN == 0 and pos % ALIGN == 0 and (offset - shift) % ALIGN == 0)
            pos += nb
        self._in_place[(layer, kind)] = tuple(flags)
        self._shift[(layer, kind)] = shift
        return shift

    def _slot_ptr(self, layer: int, kind: str, slot: int):
        """Host address of `slot` as layer `layer`'s `kind` tensor sees it."""
        k = self.kinds[kind]
        return self.region.ptr + k["offset"] + self._shift[(layer, kind)] + slot * k["slot"]

    @property
    def in_place_fraction(self) -> float:
        """Share of the streamed expert bytes read straight into their host slots (0 on a GPU)."""
        total = sum(nb for parts in self.expert_src.values() for _, nb in parts)
        placed = sum(nb for key, parts in self.expert_src.items()
                     for (_, nb), ok in zip(parts, self._in_place[key]) if ok)
        return placed / total if total else 0.0

    def _resize_neutral_side_tensors(self, owned: OwnedLoad) -> None:
        """Per-expert side tensors the file lacks (scales, biases: llama.cpp's optional `*_exps.scale` /
        `.bias`, given neutral values by the loader) are indexed by the same expert ids as the matmuls
        (get_rows / add_id): after the remap they must span `n_slots` rows, not `n_expert`."""
        for name, (t, value) in owned.neutral_tensors.items():
            m = EXPS.match(name)
            if not m or int(m.group(1)) not in self._pos:
                continue
            dims = [d for d in range(4) if int(t.ne[d]) == self.n_expert]
            if not dims:
                raise ValueError(f"{self.path}: tensor {name} has no expert dimension of {self.n_expert}")
            d = dims[-1]
            t.ne[d] = self.n_slots
            for k in range(d + 1, 4):
                t.nb[k] = t.nb[k - 1] * t.ne[k - 1]
            nbytes = int(lib.ggml_nbytes(t))
            if self.device is None:
                mem = AlignedBuffer(nbytes)
                buf = lib.ggml_backend_cpu_buffer_from_ptr(mem.ptr, mem.size)
                self._side_bufs.append((mem, buf))
                t.buffer, t.data = buf, mem.ptr
            else:
                mem = self.device.buffer_type.allocate(nbytes)
                self._side_bufs.append((mem, None))
                t.buffer, t.data = mem.handle, ffi.cast("void *", mem.base)
            lib.ggml_backend_tensor_set(t, ffi.new("float[]", [value] * (nbytes // 4)), 0, nbytes)

    @property
    def cache_bytes(self) -> int:
        return self._vram.size if self._vram is not None else (self.region.size if self.region else 0)

    @property
    def ram_cache_bytes(self) -> int:
        return self.ram_slots * self._l2_stride if self.l2 is not None else 0

    def _l2_ptr(self, l2_slot: int, kind: str):
        return self._l2_base + l2_slot * self._l2_stride + self.kinds[kind]["l2_offset"]

    @property
    def max_ubatch(self) -> int:
        """Largest ubatch whose union of experts always fits the cache: any (llama.cpp's default 512) when the
        cache holds a whole layer's experts, else as many tokens as the cache holds selections of."""
        if 0 < self.n_expert <= self.n_slots:
            return UBATCH_ANY
        return max(1, self.n_slots // max(1, self.n_used))

    # -- reading one expert ---------------------------------------------------------------
    def _read_expert(self, layer: int, kind: str, expert: int, slot: int | None, l2_slot: int | None = None,
                     cancel: threading.Event | None = None):
        """Read one expert of one kind into its cache slot (host), or into pinned staging and
        return the pending uploads (device: the decode thread uploads, then frees the staging).
        With `l2_slot`, the bytes are also kept in that RAM-cache slot; `slot` None: only there.
        With `cancel` (a speculative read): in SPEC_CHUNK pieces, raising _Abandoned once it is set."""
        stride = self.kinds[kind]["stride"]
        pos = at = 0
        uploads = []
        in_place = self._in_place[(layer, kind)]
        stage = self._staging.get()
        try:
            for p, (offset, nb) in enumerate(self.expert_src[(layer, kind)]):
                if slot is not None and in_place[p]:
                    dst = self._slot_ptr(layer, kind, slot) + pos
                    self._read_in_place(dst, offset + expert * nb, nb, stage, cancel)
                    if l2_slot is not None:
                        _memmove(self._l2_ptr(l2_slot, kind) + pos, dst, nb)
                    pos += nb
                    continue
                start, length = aligned_span(offset + expert * nb, nb)
                piece = length if cancel is None else SPEC_CHUNK
                for c in range(0, length, piece):
                    if cancel is not None and cancel.is_set():
                        raise _Abandoned()
                    self.reader.read_into(stage.view[at + c:at + min(length, c + piece)], start + c)
                src = stage.ptr + at + (offset + expert * nb - start)
                at += length
                if l2_slot is not None:
                    _memmove(self._l2_ptr(l2_slot, kind) + pos, src, nb)
                if slot is not None and self.device is None:
                    _memmove(self._slot_ptr(layer, kind, slot) + pos, src, nb)
                elif slot is not None:
                    uploads.append((src, slot * stride + pos, nb))
                pos += nb
        except BaseException:
            self._staging.put(stage)
            raise
        if self.device is None or slot is None:
            self._staging.put(stage)
            return None
        return kind, stage, uploads

    def _read_in_place(self, dst, src: int, nb: int, stage, cancel: threading.Event | None) -> None:
        """Read the `nb` file bytes at `src` to host address `dst` (congruent to `src` modulo a page): the
        whole pages directly, the partial first and last pages through `stage` (they share a page with a
        neighbouring slot)."""
        a, b = align_up(src), align_down(src + nb)
        at = int(ffi.cast("uintptr_t", dst)) - int(ffi.cast("uintptr_t", self.region.ptr))
        piece = SPEC_CHUNK if cancel is not None else max(b - a, ALIGN)
        for c in range(a, b, piece):
            if cancel is not None and cancel.is_set():
                raise _Abandoned()
            lo = at + (c - src)
            self.reader.read_into(self.region.view[lo:lo + min(piece, b - c)], c)
        if a > src:
            self.reader.read_into(stage.view[:ALIGN], a - ALIGN)
            _memmove(dst, stage.ptr + (src - (a - ALIGN)), a - src)
        if src + nb > b:
            self.reader.read_into(stage.view[ALIGN:2 * ALIGN], b)
            _memmove(dst + (b - src), stage.ptr + ALIGN, src + nb - b)

    # -- warm start -----------------------------------------------------------------------
    def routing_counts(self) -> dict[int, dict[int, int]]:
        """How often each (layer, expert) was chosen in this run (prompt and decode)."""
        return {layer: dict(c) for layer, c in self.routing.items()}

    def warm_start(self, counts: dict[int, dict[int, int]]) -> dict:
        """Seed the caches from earlier runs' routing counts: frequencies for eviction, and the most
        chosen experts read into the device cache (then the RAM cache) now, at load time."""
        t0 = time.perf_counter()
        flat = {(int(layer), int(e)): int(n) for layer, row in counts.items() for e, n in row.items()
                if int(layer) in self._pos and 0 <= int(e) < self.n_expert and int(n) > 0}
        self.cache.seed(flat)
        ranked = sorted(flat, key=lambda k: (-flat[k], k))
        # leave one token's working set free so the first layers do not evict what was just read
        room = max(0, self.n_slots - self.n_used)
        l1 = self.cache.preload(ranked[:room])
        l2 = []
        if self.l2 is not None:
            self.l2.seed(flat)
            l2 = self.l2.preload(ranked[room:room + self.ram_slots])
        futs = [self.reader.pool.submit(self._read_expert, layer, kind, e, s, None)
                for (layer, e), s in l1 for kind in self.kinds]
        futs += [self.reader.pool.submit(self._read_expert, layer, kind, e, None, s)
                 for (layer, e), s in l2 for kind in self.kinds]
        self._await_fill(futs, [s for _, s in l1], [s for _, s in l2])
        self._load_bytes = self._mark = self.reader.bytes_read
        self.reader.clock.busy_s = 0.0
        self._warm = {"warm_start_experts": len(l1), "warm_start_ram_experts": len(l2),
                      "warm_start_s": round(time.perf_counter() - t0, 3)}
        return self._warm

    # -- prefetch: guess the next layer's experts -----------------------------------------------
    def _guess(self, layer: int, x: np.ndarray) -> tuple[int, list[int]] | None:
        """(next streamed layer, its likely experts) from layer `layer`'s FFN input `x` (one token)."""
        nxt = self._next.get(layer)
        if nxt is None:
            return None
        w, bias, probs_b = self._look[nxt]
        score = w @ (x * self._ratio[layer])
        if bias is not None:
            score = score + bias
        if probs_b is not None:   # selection by probability plus a per-expert bias (deepseek2)
            if self._sigmoid:
                prob = 1.0 / (1.0 + np.exp(-score))
            else:
                prob = np.exp(score - score.max())
                prob /= prob.sum()
            score = prob + probs_b
        top = np.argpartition(-score, self.n_used - 1)[:self.n_used]
        return nxt, sorted(int(e) for e in top)

    def _speculate(self, layer: int, node, busy: set[int]) -> None:
        """After layer `layer`'s reads: start reading the next layer's guessed experts that are not cached,
        into slots other than `busy` (this layer's, computing next)."""
        if node.type != lib.GGML_TYPE_F32 or int(lib.ggml_nbytes(node)) != 4 * int(node.ne[0]):
            return
        x = np.empty(int(node.ne[0]), dtype=np.float32)
        lib.ggml_backend_tensor_get(node, ffi.cast("void *", x.ctypes.data), 0, x.nbytes)
        guess = self._guess(layer, x)
        if guess is None:
            return
        nxt, experts = guess
        self._guessed[nxt] = experts
        for e in experts:
            if self.l2 is not None and (nxt, e) in self.l2:
                continue          # a RAM-tier hit is one copy at demand time: no disk time to hide
            slot = self.cache.reserve(nxt, e, busy)
            if slot is None:      # cached already, or nothing evictable
                continue
            busy.add(slot)
            cancel = threading.Event()
            futs = [self._spec_pool.submit(self._read_expert, nxt, kind, e, slot, None, cancel)
                    for kind in self.kinds]
            self._spec[(nxt, e)] = (slot, futs, cancel)
            self._pf["reads"] += 1

    def _settle_guesses(self, layer: int, chosen: set[int]) -> tuple[list, list[int]]:
        """Before layer `layer` consults the cache: stop every speculative read the router did not ask for
        (wait for it: it stops within a piece; a slot whose read did not finish is emptied) and return the
        futures and slots of the right guesses, to be waited for with the layer's own reads."""
        if layer in self._guessed and self._pass_is_decode:
            g = self._guessed.pop(layer)
            self._pf["guesses"] += len(g)
            self._pf["right"] += len(chosen.intersection(g))
        if not self._spec:
            return [], []
        right = {k: v for k, v in self._spec.items() if k[0] == layer and k[1] in chosen}
        wrong = [v for k, v in self._spec.items() if k not in right]
        self._spec = {}
        for _, _, cancel in wrong:
            cancel.set()
        empty = []
        for slot, futs, _ in wrong:
            results = []
            for f in futs:
                try:
                    results.append(f.result())
                except BaseException:  # noqa: BLE001 - abandoned, or an I/O error a demand read would report
                    results.append(None)
                    if slot not in empty:
                        empty.append(slot)
            for pending in results:   # a finished wrong guess is still a valid cached expert
                if pending is not None:
                    if slot in empty:
                        self._staging.put(pending[1])
                    else:
                        self._upload(pending)
        if empty:
            self._pf["abandoned"] += len(empty)
            self.cache.invalidate(empty)
        return [f for _, futs, _ in right.values() for f in futs], [slot for slot, _, _ in right.values()]

    def prefetch_report(self) -> dict:
        """How well the guesses did: share of guessed experts the router chose, speculative reads
        issued, reads that served a selection, and reads stopped because the guess was wrong."""
        pf = self._pf
        used = self.cache.stats.prefetched
        return {"enabled": bool(self._look), "predictor": "next layer's router on this layer's FFN input",
                "guesses": pf["guesses"], "accuracy": round(pf["right"] / pf["guesses"], 4) if pf["guesses"] else 0.0,
                "reads": pf["reads"], "used": used, "abandoned": pf["abandoned"],
                "misses_covered": round(used / (used + self.cache.stats.misses), 4) if used else 0.0}

    def _finish_reads(self, futs: list) -> None:
        """Wait for expert reads; upload what landed in pinned staging (device) and free the staging.
        On an error, let every read finish and free its staging exactly once, then raise the first error."""
        done = set()
        try:
            for f in as_completed(futs):
                done.add(f)
                pending = f.result()          # a failed read freed its own staging
                if pending is not None:
                    self._upload(pending)
        except BaseException:
            self._drain(f for f in futs if f not in done)
            raise

    def _await_fill(self, futs: list, slots: list[int], l2_slots: list) -> None:
        """Wait for the reads that fill `slots` (and RAM-tier `l2_slots`); if one fails, those slots hold
        nothing usable: forget them, then raise."""
        try:
            self._finish_reads(futs)
        except BaseException:
            self._forget(slots, l2_slots)
            raise

    def _forget(self, slots: list[int], l2_slots: list) -> None:
        self.cache.invalidate(slots)
        if self.l2 is not None:
            self.l2.invalidate([s for s in l2_slots if s is not None])

    def _upload(self, pending) -> None:
        """Upload what a device read left in pinned staging, then free the staging."""
        kind, stage, uploads = pending
        try:
            for src, dst_off, nb in uploads:
                lib.ggml_backend_tensor_set(self._kind_tensor[kind], src, dst_off, nb)
        finally:
            self._staging.put(stage)

    def _drain(self, futs) -> None:
        """Let reads finish and free the staging of those nobody will upload."""
        for f in futs:
            try:
                pending = f.result()
                if pending is not None:
                    self._staging.put(pending[1])
            except BaseException:  # noqa: BLE001 - the caller raises the error that matters
                pass

    def _deliver(self, layer: int, kind: str, src, slot: int) -> None:
        """Copy one expert of one kind from host memory into its cache slot (device: an upload)."""
        stride = self.kinds[kind]["stride"]
        if self.device is None:
            _memmove(self._slot_ptr(layer, kind, slot), src, stride)
        else:
            lib.ggml_backend_tensor_set(self._kind_tensor[kind], src, slot * stride, stride)

    # -- the eval callback ----------------------------------------------------------------
    def _finish_late(self, layer: int) -> None:
        """Wait for the down experts of `layer`, read while its gate/up matmuls computed (the split after
        them, `ffn_moe_gate_up-N` or `ffn_moe_gate-N`, before anything reads the down experts)."""
        late, self._late = self._late, None
        if late is None:
            return
        held, futs, slots, l2_slots = late
        t0 = time.perf_counter()
        self._await_fill(futs, slots, l2_slots)
        self.stall_s += time.perf_counter() - t0
        self._count_bytes()
        if held != layer:
            raise StreamError(f"layer {held}: its down experts were still being read at layer {layer}'s gate "
                              "matmul (unexpected graph order)")

    def _arm(self, layer: int, on: bool) -> None:
        """Switch the splits after `layer`'s gate/up and down matmuls on or off. On for every layer until its
        graph has been seen once; from then on only in a pass whose down reads of that layer are deferred,
        so layers that read nothing pay no extra splits."""
        for r in (*self._r_gate, self._r_out):
            self.eval_filter.set_layer(r, layer, on)

    def _count_bytes(self) -> None:
        """Bytes read since the last split, counted for the current pass."""
        now = self.reader.bytes_read
        if self._pass_is_decode:
            self._decode_bytes += now - self._mark
        self._mark = now

    def _on_node(self, tensor, ask: bool, rule: int, layer: int) -> None:
        if rule == self._r_topk:
            self._ids[layer] = tensor
            return
        if rule in self._r_gate:
            self._gate_seen.add(layer)
            self._finish_late(layer)
            return
        if rule == self._r_out:
            self._out_seen.add(layer)
            if self._late is not None and self._late[0] == layer:
                self._finish_late(layer)   # whole, or their slots forgotten; the pass fails either way
                raise StreamError(f"layer {layer}: its down experts were not waited for before its down matmul")
            self._arm(layer, False)
            return
        k = self._pos[layer]
        first_of_pass = k <= self._last_k
        if first_of_pass:
            self.passes += 1
            self.reader.check_unchanged()
        self._last_k = k
        if self._late is not None:
            held = self._late[0]
            self._finish_late(held)   # from an aborted pass: its reads are whole once finished
            if not first_of_pass:
                raise StreamError(f"layer {held}: its down experts were not waited for before its down matmul")
        ids_t = self._ids.get(layer)
        if ids_t is None:
            raise StreamError(f"layer {layer}: the router's top-k node was not seen before the expert matmuls")
        n_used, n_tok = int(ids_t.ne[0]), int(ids_t.ne[1])
        if first_of_pass:   # a prompt chunk narrows to its output rows at the last layer: decide here
            self._pass_is_decode = n_tok == 1
        if n_tok == 0:  # e.g. the last layer of a prompt chunk whose outputs are not needed
            return
        span = int(lib.ggml_nbytes(ids_t))
        raw = bytearray(span)
        lib.ggml_backend_tensor_get(ids_t, ffi.from_buffer(raw), 0, span)
        ids = np.lib.stride_tricks.as_strided(np.frombuffer(raw, dtype=np.int32), shape=(n_tok, n_used),
                                              strides=(int(ids_t.nb[1]), int(ids_t.nb[0])), writeable=False)
        if ids.min() < 0 or ids.max() >= self.n_expert:
            raise StreamError(f"layer {layer}: router produced expert ids outside [0, {self.n_expert})")
        self.routing[layer].update(ids.ravel().tolist())
        chosen = sorted(set(ids.ravel().tolist()))
        spec_futs, spec_slots = self._settle_guesses(layer, set(chosen))
        used_before = self.cache.stats.prefetched
        mapping, to_read = self.cache.lookup(layer, chosen)
        n_prefetched = self.cache.stats.prefetched - used_before
        from_ram: list[tuple[int, int, int]] = []
        from_disk: list[tuple[int, int, int | None]] = [(e, s, None) for e, s in to_read]
        if self.l2 is not None and to_read:
            l2_map, l2_read = self.l2.lookup(layer, [e for e, _ in to_read])
            missing = {e for e, _ in l2_read}
            from_ram = [(e, s, l2_map[e]) for e, s in to_read if e not in missing]
            from_disk = [(e, s, l2_map[e]) for e, s in to_read if e in missing]
        # down experts later once this layer's graph has shown the splits after its gate/up matmuls and
        # after its down matmul (which fails the pass if they were not waited for: never a wrong token)
        late = ("down",) if layer in self._gate_seen and layer in self._out_seen and "down" in self.kinds else ()
        futs = [self.reader.pool.submit(self._read_expert, layer, kind, e, s, l2s)
                for e, s, l2s in from_disk for kind in self.kinds if kind not in late]
        futs += spec_futs              # this layer's right guesses, still reading
        t0 = time.perf_counter()
        filling, l2_filling = [s for _, s in to_read] + spec_slots, [l2s for _, _, l2s in from_disk]
        try:
            for e, s, l2s in from_ram:   # while the NVMe reads run: RAM-cache hits go up directly
                for kind in self.kinds:
                    self._deliver(layer, kind, self._l2_ptr(l2s, kind), s)
        except BaseException:
            self._drain(futs)
            self._forget(filling, l2_filling)
            raise
        self._await_fill(futs, filling, l2_filling)
        self.stall_s += time.perf_counter() - t0
        if late and from_disk:   # the disk reads them while gate/up compute; waited for at the split after
            self._late = (layer, [self.reader.pool.submit(self._read_expert, layer, kind, e, s, l2s)
                           for e, s, l2s in from_disk for kind in late],
                          [s for _, s, _ in from_disk], l2_filling)
            self._late_reads += len(from_disk)
            self._arm(layer, True)
        self.expert_bytes_read += (len(from_disk) + len(spec_slots)) * self._l2_stride
        if self._pass_is_decode:   # what the token rate pays (a prompt chunk reads the union of its tokens')
            self._needed_bytes += (len(from_disk) + n_prefetched) * self._l2_stride
            if self._decode_pass != self.passes:
                self._decode_pass = self.passes
                self._decode_passes += 1
        self.ram_bytes_uploaded += len(from_ram) * self._l2_stride
        lut = np.arange(self.n_expert, dtype=np.int32)
        for e, s in mapping.items():
            lut[e] = s
        out = np.frombuffer(raw, dtype=np.int32).copy()
        view = np.lib.stride_tricks.as_strided(out, shape=(n_tok, n_used),
                                               strides=(int(ids_t.nb[1]), int(ids_t.nb[0])))
        view[:] = lut[ids]
        lib.ggml_backend_tensor_set(ids_t, ffi.from_buffer(out), 0, span)
        if self._look and self._pass_is_decode:
            self._speculate(layer, tensor, set(mapping.values()))
        self._count_bytes()   # since the last split: this layer's reads and the guesses settled here

    # -- reporting ------------------------------------------------------------------------
    def routing_summary(self) -> dict:
        """Distinct experts chosen per layer and the share of selections of the top 10% experts."""
        out = {}
        for layer, counts in sorted(self.routing.items()):
            total = sum(counts.values())
            top = sorted(counts.values(), reverse=True)[: max(1, self.n_expert // 10)]
            out[layer] = {"distinct": len(counts), "top10pct_share": round(sum(top) / total, 3) if total else 0.0}
        return out

    def stats(self) -> dict:
        whole = sum(nb * self.n_expert for parts in self.expert_src.values() for _, nb in parts)
        read = self.reader.bytes_read - self._load_bytes
        st = self.cache.stats
        return {
            "streamed_layers": len(self.layers), "cache_slots": self.n_slots, "n_expert": self.n_expert,
            "experts_used": self.n_used, "pool_bytes": self.cache_bytes,
            "bytes_from_disk": read, "disk_bytes_per_pass": read / self.passes if self.passes else 0,
            # per decoded token: bytes read in single-token passes (the prompt's chunks excluded), speculative
            # reads included; and the bytes of the experts those passes needed and did not hold, the least
            # any reader must fetch (the physical limit's denominator)
            "disk_bytes_per_token": self._decode_bytes / self._decode_passes if self._decode_passes else 0,
            "needed_bytes_per_token": self._needed_bytes / self._decode_passes if self._decode_passes else 0,
            "decode_passes": self._decode_passes,
            "disk_gbps": round(self.reader.gbps, 3), "passes": self.passes,
            "experts_loaded": st.misses, "expert_cache_hits": st.hits, "experts_prefetched": st.prefetched,
            "expert_cache_hit_rate": round(st.hit_rate, 4),
            "expert_hit_rate_by_layer": {str(k): round(v, 4) for k, v in st.hit_rate_by_layer().items()},
            "io_saved_fraction": round(1 - self.expert_bytes_read / (whole * self.passes), 4) if self.passes else 0,
            "stall_s": round(self.stall_s, 3), "direct_io": self.reader.direct,
            "in_place_fraction": round(self.in_place_fraction, 4), "staging_bytes": self._staging_bytes,
            # experts whose down matrix was read while the layer's gate/up matmuls computed
            "down_reads_overlapped": self._late_reads, "cache_policy": self.policy,
            **self._ram_stats(),
            "device": self.device.name if self.device is not None else "CPU",
            "streamed_ops_on_gpu": self.device is not None and self.buffer is not None
            and not lib.ggml_backend_buffer_is_host(self.buffer),
            "routing": self.routing_summary(), "prefetch": self.prefetch_report(), **self._warm,
        }

    def _ram_stats(self) -> dict:
        if self.l2 is None:
            return {"ram_cache_slots": 0}
        st = self.l2.stats
        return {"ram_cache_slots": self.ram_slots, "ram_cache_bytes": self.ram_cache_bytes,
                "ram_cache_hits": st.hits, "ram_cache_hit_rate": round(st.hit_rate, 4),
                "bytes_from_ram": self.ram_bytes_uploaded}

    def close(self) -> None:
        if self._late is not None:
            self._drain(self._late[1])
            self._late = None
        for _, futs, cancel in self._spec.values():
            cancel.set()
        self._drain(f for _, futs, _ in self._spec.values() for f in futs)
        self._spec = {}
        if self._spec_pool is not None:
            self._spec_pool.shutdown(wait=True)
            self._spec_pool = None
        self.reader.close()
        for mem, buf in self._side_bufs:
            if buf is not None:
                lib.ggml_backend_buffer_free(buf)
            mem.close()
        self._side_bufs.clear()
        if self._l2_mem is not None:
            self._l2_base = None   # drop the cdata exporting the host buffer before releasing it
            self._l2_mem.close()
            self._l2_mem = None
        for buf in self._staging_bufs:
            buf.close()
        self._staging_bufs.clear()
        if self._vram is not None:
            self._vram.close()
            self._vram = None
        elif self.buffer is not None:
            lib.ggml_backend_buffer_free(self.buffer)
            self.region.close()
        self.buffer = None

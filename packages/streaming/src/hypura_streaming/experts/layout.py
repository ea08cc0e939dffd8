"""Where every streamed expert's bytes are: in the file, in the cache region, in a RAM-cache slot.

Pure arithmetic over the streamed tensors' shapes and file offsets (no memory, no llama.cpp), so it can
be checked by hand. A *kind* is one role of a per-expert tensor: the fused matrices `gate`, `up`, `down`,
`gate_up`, and side tensors indexed by the same expert ids, named `<kind>.<suffix>` (gpt-oss's
`down.bias` [n_embd, n_expert], per-expert `gate.scale` [n_expert]). Each kind has one run of `n_slots`
cache slots in the region, shared by every streamed layer; a RAM-cache slot holds one expert of every
kind, back to back.

Per-layer types. Real files give one kind another type by layer (llama-quantize's Q4_K_M: Q6_K
`ffn_down_exps` in some layers, Q4_K in the rest), so one expert's bytes differ by layer: a kind's slots
are sized for its largest expert across the streamed layers (`stride`), each layer's tensor keeps its own
type and indexes the slots with `nb[expert dim]` = the slot size (MUL_MAT_ID and ADD_ID honour it), and
its own experts fill a slot's first `nbytes[(layer, kind)]` bytes. On a GPU the slot size is also a whole
number of every such type's blocks (CUDA's quantized MUL_MAT_ID divides `nb[2]` by the block size), and
the bytes after a smaller expert are zeroed up to MMQ's over-read (stale bytes of another type could be NaN).

Reading in place (host caches). O_DIRECT reads whole pages into page-aligned memory, so a byte lands at
the same offset within its page as it has within the file's page. GGUF aligns tensors to 32 bytes only:
an expert starts at some misalignment m (the same for every expert of a tensor when an expert is a whole
number of pages). Where some layer of a kind can be read so, that kind's host slots are a whole number of
pages plus one (`HOST_SLOT_PAD`) and each such layer's tensor starts m bytes into them (its own `data`), so
the expert's whole pages are read straight into the slot and only its first and last partial pages go
through staging. A part that cannot be placed so (not whole pages, the second part of a composed gate_up
at another misalignment, an expert the CPU keeps repacked) is read into staging and copied, as on a GPU
(where every part is staged and m is 0).

Repacked experts (`ExpertTensor.repacked`: the type llama.cpp's default CPU load puts in CPU_REPACK):
their slots hold the repacked layout, which only `ggml_backend_tensor_set` writes, so they are always
staged and never read in place (memory.py converts each expert as it lands).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..directio import ALIGN, align_up
from ..spec import HOST_SLOT_PAD

Key = tuple[int, str]   # (layer, kind)
SLOT_ALIGN = 64         # host slots start 64-byte aligned (SIMD loads of repacked/quantized blocks)


def kind_of(kind: str, suffix: str) -> str:
    """The layout's kind of `blk.N.ffn_<kind>_exps.<suffix>`: the matrices by role, side tensors qualified."""
    return kind if suffix == "weight" else f"{kind}.{suffix}"


@dataclass(frozen=True)
class ExpertTensor:
    """One streamed per-expert tensor as llama.cpp created it (the expert dimension is its last one of
    more than one element: 2 for the matrices, 1 for a bias [n, n_expert], 0 for a scale [n_expert]).
    `parts`: per part of one expert, (file offset of the source tensor, bytes of one expert); two for a
    gate_up composed from gate and up. `repacked`: the CPU keeps it in a repacked layout (CPU_REPACK)."""

    name: str
    layer: int
    kind: str
    ne: tuple[int, ...]
    nb: tuple[int, ...]
    file_bytes: int
    parts: tuple[tuple[int, int], ...]
    repacked: bool = False

    @property
    def expert_dim(self) -> int:
        return max((d for d in range(4) if self.ne[d] > 1), default=0)


@dataclass
class KindLayout:
    stride: int          # bytes of the largest expert of this kind across the streamed layers
    slot: int = 0        # bytes of one cache slot (host: whole pages plus HOST_SLOT_PAD where read in place)
    offset: int = 0      # start of this kind's slots in the cache region
    ram_offset: int = 0  # start of this kind's bytes within a RAM-cache slot
    expert_dim: int = 2  # the dimension of its tensors that indexes experts (slots, once re-pointed)


@dataclass
class ExpertLayout:
    n_expert: int
    n_slots: int
    ram_slots: int
    host: bool
    kinds: dict[str, KindLayout]
    parts: dict[Key, tuple[tuple[int, int], ...]]
    shift: dict[Key, int] = field(default_factory=dict)          # the tensor's start within a host slot
    in_place: dict[Key, tuple[bool, ...]] = field(default_factory=dict)   # per part: read in place
    nbytes: dict[Key, int] = field(default_factory=dict)         # bytes of one expert of (layer, kind)
    repacked: frozenset = frozenset()                            # keys the CPU keeps repacked
    region_bytes: int = 0
    ram_stride: int = 0  # bytes of one RAM-cache slot (one expert of every kind)

    @classmethod
    def build(cls, path: str, layers: list[int], tensors: list[ExpertTensor], n_slots: int, ram_slots: int,
              host: bool) -> ExpertLayout:
        """Check that `tensors` are per-expert tensors of one expert count and place them. `n_slots` and
        `ram_slots` are capped at the experts there are (the RAM tier holds what the cache does not)."""
        by_layer: dict[int, list[ExpertTensor]] = {}
        for t in tensors:
            by_layer.setdefault(t.layer, []).append(t)
        for layer in layers:
            if not any(t.name.endswith(".weight") for t in by_layer.get(layer, ())):
                raise ValueError(f"{path}: layer {layer} has no routed expert tensors (blk.{layer}.ffn_*_exps)")
        n_expert, kinds, parts, nbytes, repacked, blocks = 0, {}, {}, {}, set(), {}
        for t in (t for ts in by_layer.values() for t in ts):
            d = t.expert_dim
            n_exp, nbe = t.ne[d], t.nb[d]
            if n_exp < 2 or t.ne[3] != 1 or nbe * n_exp != t.file_bytes or (t.name.endswith(".weight") and d != 2):
                raise ValueError(f"{path}: tensor {t.name} is not a fused [*, *, n_expert] expert tensor or a "
                                 f"[*, n_expert] side tensor (ne={list(t.ne)}, nb={list(t.nb)})")
            if n_expert and n_exp != n_expert:
                raise ValueError(f"{path}: tensor {t.name} has {n_exp} experts, others {n_expert}")
            n_expert = n_exp
            k = kinds.setdefault(t.kind, KindLayout(nbe, expert_dim=d))
            if k.expert_dim != d:
                raise ValueError(f"{path}: tensor {t.name} indexes experts by dimension {d}, other layers' by "
                                 f"{k.expert_dim}")
            k.stride = max(k.stride, nbe)
            key = (t.layer, t.kind)
            parts[key], nbytes[key], blocks[key] = t.parts, nbe, t.nb[0]
            if t.repacked:
                repacked.add(key)
        n_all = n_expert * len(layers)
        n_slots = min(n_slots, n_all)
        lay = cls(n_expert, n_slots, min(ram_slots, max(0, n_all - n_slots)), host, kinds, parts,
                  nbytes=nbytes, repacked=frozenset(repacked))

        def placeable(key) -> bool:   # every part whole pages, at page offsets within the expert
            at, ok = 0, []
            for _, nb in parts[key]:
                ok.append(nb % ALIGN == 0 and at % ALIGN == 0)
                at += nb
            return host and key not in repacked and all(ok)

        pos = 0
        for kind in sorted(kinds):
            k = kinds[kind]
            if k.expert_dim < 2:   # side tensors stay contiguous (llama.cpp reshapes scales)
                k.slot = k.stride
            elif not host:         # CUDA's quantized MUL_MAT_ID takes nb[2] in blocks of the layer's type
                k.slot = align_up(k.stride, math.lcm(*(blocks[key] for key in parts if key[1] == kind)))
            elif any(placeable(key) for key in parts if key[1] == kind):
                k.slot = align_up(k.stride) + HOST_SLOT_PAD
            elif any(key in repacked for key in parts if key[1] == kind):
                k.slot = align_up(k.stride)   # whole pages: a repacked expert is read into its slot (repacked_file.py)
            else:
                k.slot = align_up(k.stride, SLOT_ALIGN)
            k.offset = pos
            pos += align_up(n_slots * k.slot)
            k.ram_offset = lay.ram_stride
            lay.ram_stride += k.stride
        lay.region_bytes = pos
        for key, ps in parts.items():
            can = placeable(key) and kinds[key[1]].slot % ALIGN == 0
            shift = ps[0][0] % ALIGN if can else 0
            lay.in_place[key] = tuple(can and (offset - shift) % ALIGN == 0 for offset, _ in ps)
            lay.shift[key] = shift
        return lay

    def slot_offset(self, layer: int, kind: str, slot: int) -> int:
        """Offset in the cache region of `slot` as layer `layer`'s `kind` tensor sees it."""
        k = self.kinds[kind]
        return k.offset + self.shift[(layer, kind)] + slot * k.slot

    def ram_slot_offset(self, ram_slot: int, kind: str) -> int:
        """Offset in the RAM cache of one expert of `kind` in `ram_slot`."""
        return ram_slot * self.ram_stride + self.kinds[kind].ram_offset

    def expert_bytes(self, layer: int) -> int:
        """Bytes of one expert of `layer`, every kind (what reading it costs)."""
        return sum(self.nbytes[(layer, kind)] for kind in self.kinds if (layer, kind) in self.nbytes)

    @property
    def staging_bytes(self) -> int:
        """Staging one read of one expert of one kind needs: every staged part at its own place (a
        composed gate_up has two), parts read in place only their partial first and last pages (reads that
        also fill the RAM tier are always staged)."""
        largest = 2 * ALIGN
        for key, ps in self.parts.items():
            staged = ps if self.ram_slots else [p for p, ok in zip(ps, self.in_place[key]) if not ok]
            largest = max(largest, sum(align_up(nb) + ALIGN for _, nb in staged))
        return largest

    @property
    def pass_bytes(self) -> int:
        """Bytes of every streamed expert: what a pass would read without a cache."""
        return sum(nb * self.n_expert for ps in self.parts.values() for _, nb in ps)

    @property
    def in_place_fraction(self) -> float:
        """Share of the streamed expert bytes read straight into their host slots (0 on a GPU)."""
        total = sum(nb for ps in self.parts.values() for _, nb in ps)
        placed = sum(nb for key, ps in self.parts.items() for (_, nb), ok in zip(ps, self.in_place[key]) if ok)
        return placed / total if total else 0.0

    @property
    def repacked_fraction(self) -> float:
        """Share of the streamed expert bytes the CPU keeps repacked (converted as they land)."""
        total = sum(nb for ps in self.parts.values() for _, nb in ps)
        return sum(nb for key in self.repacked for _, nb in self.parts[key]) / total if total else 0.0

    @property
    def slot_bytes_mean(self) -> float:
        """Mean bytes of one expert (every kind) over the streamed layers, against `ram_stride` (the largest
        of each kind): what sizing slots for the largest type costs."""
        layers = {layer for layer, _ in self.nbytes}
        return sum(self.expert_bytes(layer) for layer in layers) / len(layers) if layers else 0.0

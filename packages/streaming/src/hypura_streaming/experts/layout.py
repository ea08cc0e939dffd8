"""Where every streamed expert's bytes are: in the file, in the cache region, in a RAM-cache slot.

Pure arithmetic over the streamed tensors' shapes and file offsets (no memory, no llama.cpp), so it can
be checked by hand. Each kind (`gate`, `up`, `down`, `gate_up`) has one expert size (`stride`, the
tensor's `nb[2]`) shared by every streamed layer, and one shared run of `n_slots` cache slots in the
region; a RAM-cache slot holds one expert of every kind, back to back.

Reading in place (host caches). O_DIRECT reads whole pages into page-aligned memory, so a byte lands at
the same offset within its page as it has within the file's page. GGUF aligns tensors to 32 bytes only:
an expert starts at some misalignment m (the same for every expert of a tensor when an expert is a whole
number of pages). Host slots are one page (`HOST_SLOT_PAD`) longer than an expert and each layer's
tensor starts m bytes into them (its own `data`; `nb[2]` is the padded slot size, which MUL_MAT_ID
honours), so the expert's whole pages are read straight into the slot and only its first and last
partial pages go through staging: no 99 MB copy per Mixtral expert on a CPU that must then compute. A
part that cannot be placed so (not whole pages, or the second part of a composed gate_up at another
misalignment) is read into staging and copied, as on a GPU (where every part is staged and m is 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..directio import ALIGN, align_up
from ..spec import HOST_SLOT_PAD

Key = tuple[int, str]   # (layer, kind)


@dataclass(frozen=True)
class ExpertTensor:
    """One streamed fused expert tensor as llama.cpp created it. `parts`: per part of one expert, (file
    offset of the source tensor, bytes of one expert); two for a gate_up composed from gate and up."""

    name: str
    layer: int
    kind: str
    ne: tuple[int, ...]
    nb: tuple[int, ...]
    file_bytes: int
    parts: tuple[tuple[int, int], ...]


@dataclass
class KindLayout:
    stride: int          # bytes of one expert of this kind
    slot: int = 0        # bytes of one cache slot (host: stride + HOST_SLOT_PAD)
    offset: int = 0      # start of this kind's slots in the cache region
    ram_offset: int = 0  # start of this kind's bytes within a RAM-cache slot


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
    region_bytes: int = 0
    ram_stride: int = 0  # bytes of one RAM-cache slot (one expert of every kind)

    @classmethod
    def build(cls, path: str, layers: list[int], tensors: list[ExpertTensor], n_slots: int, ram_slots: int,
              host: bool) -> ExpertLayout:
        """Check that `tensors` are fused expert tensors in one layout and place them. `n_slots` and
        `ram_slots` are capped at the experts there are (the RAM tier holds what the cache does not)."""
        by_layer: dict[int, list[ExpertTensor]] = {}
        for t in tensors:
            if not t.name.endswith(".weight"):
                raise ValueError(f"{path}: tensor {t.name}: per-expert side tensors are not supported by "
                                 "expert streaming (use --mode dense-stream or resident)")
            by_layer.setdefault(t.layer, []).append(t)
        for layer in layers:
            if not by_layer.get(layer):
                raise ValueError(f"{path}: layer {layer} has no routed expert tensors (blk.{layer}.ffn_*_exps)")
        n_expert, kinds, parts = 0, {}, {}
        for t in (t for ts in by_layer.values() for t in ts):
            n_exp, nb2 = t.ne[2], t.nb[2]
            if n_exp < 2 or t.ne[3] != 1 or nb2 * n_exp != t.file_bytes:
                raise ValueError(f"{path}: tensor {t.name} is not a fused [*, *, n_expert] expert tensor "
                                 f"(ne={list(t.ne)}, nb={list(t.nb)})")
            if n_expert and n_exp != n_expert:
                raise ValueError(f"{path}: tensor {t.name} has {n_exp} experts, others {n_expert}")
            n_expert = n_exp
            k = kinds.setdefault(t.kind, KindLayout(nb2))
            if k.stride != nb2:
                raise ValueError(f"{path}: tensor {t.name}: expert size {nb2} differs from other layers' "
                                 f"{k.stride} (mixed quantization types are not supported yet)")
            parts[(t.layer, t.kind)] = t.parts
        n_all = n_expert * len(layers)
        n_slots = min(n_slots, n_all)
        lay = cls(n_expert, n_slots, min(ram_slots, max(0, n_all - n_slots)), host, kinds, parts)
        pos = 0
        for kind in sorted(kinds):
            k = kinds[kind]
            k.slot = k.stride + (HOST_SLOT_PAD if host else 0)
            k.offset = pos
            pos += align_up(n_slots * k.slot)
            k.ram_offset = lay.ram_stride
            lay.ram_stride += k.stride
        lay.region_bytes = pos
        for key, ps in parts.items():
            shift = ps[0][0] % ALIGN if host else 0
            flags, at = [], 0
            for offset, nb in ps:
                flags.append(host and nb % ALIGN == 0 and at % ALIGN == 0 and (offset - shift) % ALIGN == 0)
                at += nb
            lay.in_place[key], lay.shift[key] = tuple(flags), shift
        return lay

    def slot_offset(self, layer: int, kind: str, slot: int) -> int:
        """Offset in the cache region of `slot` as layer `layer`'s `kind` tensor sees it."""
        k = self.kinds[kind]
        return k.offset + self.shift[(layer, kind)] + slot * k.slot

    def ram_slot_offset(self, ram_slot: int, kind: str) -> int:
        """Offset in the RAM cache of one expert of `kind` in `ram_slot`."""
        return ram_slot * self.ram_stride + self.kinds[kind].ram_offset

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

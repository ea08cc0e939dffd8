"""The memory expert streaming owns, and how llama.cpp's tensors come to point into it.

- The cache region: `n_slots` slots per kind (host memory wrapped as a ggml CPU buffer, or VRAM), into
  which each streamed layer's per-expert tensors are re-pointed with `ne[expert dim] = n_slots` and
  `nb[expert dim]` = the kind's slot size, so MUL_MAT_ID (and ADD_ID for biases) index cache slots instead
  of experts, each layer with its own type.
- Repacked experts (host): where llama.cpp's default CPU load keeps a layer's experts in CPU_REPACK, the
  region is that buffer type's memory and the layer's tensor lives in it (its `extra`, the repack
  traits, set by the buffer); an expert is written there only through `ggml_backend_tensor_set` on a
  one-expert view (which repacks: 8-row groups, so one expert converts alone when its rows are a multiple
  of 8; checked: the view gets the same traits as the tensor). The layers whose type is not repacked use
  a plain CPU buffer over the same memory (a slot holds any layer's expert in turn).
- The RAM cache tier behind a device cache (pinned host memory; plain host memory with a host cache).
- Staging buffers for reads, one per reader thread (`StagingPool`: a buffer is given back exactly once).
- Per-expert side tensors the file lacks (llama.cpp's optional `*_exps.scale`/`.bias`, neutral values):
  indexed by the same remapped ids, so resized to span `n_slots`.
"""
from __future__ import annotations

import ctypes
import queue

from hypura_llama import ffi, lib

from ..loader import AlignedBuffer, OwnedLoad
from ..directio import ALIGN, align_up
from ..pool import MMQ_PAD, PinnedWindow
from ..spec import EXPS
from .layout import ExpertLayout


def memmove(dst, src, n: int) -> None:
    """Copy `n` bytes between two cffi pointers."""
    ctypes.memmove(int(ffi.cast("uintptr_t", dst)), int(ffi.cast("uintptr_t", src)), n)


class StagingPool:
    """`count` page-aligned buffers of `size` bytes (pinned on a GPU: DMA sources) for reads to land in."""

    def __init__(self, count: int, size: int, device=None) -> None:
        self.size, self.count = size, count
        self._all = [AlignedBuffer(size) if device is None else PinnedWindow(device.host_buffer_type, size)
                     for _ in range(count)]
        self._free: queue.Queue = queue.Queue()
        for buf in self._all:
            self._free.put(buf)

    def take(self):
        """A free buffer (waits for one)."""
        return self._free.get()

    def give_back(self, buf) -> None:
        self._free.put(buf)

    @property
    def n_free(self) -> int:
        return self._free.qsize()

    def free_buffers(self) -> list:
        """The buffers free now (a snapshot, for checks)."""
        return list(self._free.queue)

    @property
    def nbytes(self) -> int:
        return self.count * self.size

    def close(self) -> None:
        for buf in self._all:
            buf.close()
        self._all.clear()


class ExpertMemory:
    """Cache region, RAM tier, staging and side tensors for `layout` on `device` (None: host)."""

    def __init__(self, layout: ExpertLayout, device, n_staging: int, repack_buft=None) -> None:
        """`repack_buft`: the CPU extra buffer type (`hypura_llama.BufferType`) of the layout's repacked
        keys (host only; None when none is repacked)."""
        self.layout = layout
        self.device = device
        self._region: AlignedBuffer | None = None
        self._repack_mem = None
        self.repack_buffer = None
        self.repack_buft_name = repack_buft.name if repack_buft is not None else ""
        self._vram = None
        self._side: list = []
        self._ram_mem = None
        self.tensors: dict[tuple[int, str], object] = {}   # (layer, kind) -> its re-pointed tensor
        self._zeros = None
        self._whole = None                 # device: the region as one byte tensor (zero_tail)
        if device is None:
            if layout.repacked:
                if repack_buft is None:
                    raise ValueError("repacked experts need the CPU extra buffer type they are repacked for")
                self._repack_mem = repack_buft.allocate(layout.region_bytes + ALIGN)
                self.repack_buffer = self._repack_mem.handle
                self._base = ffi.cast("char *", align_up(self._repack_mem.base))
                self._view = memoryview(ffi.buffer(self._base, max(layout.region_bytes, 1)))
            else:
                self._region = AlignedBuffer(layout.region_bytes)
                self._base, self._view = self._region.ptr, self._region.view
            self.buffer = lib.ggml_backend_cpu_buffer_from_ptr(self._base, max(layout.region_bytes, 1))
        else:
            self._vram = device.buffer_type.allocate(layout.region_bytes + MMQ_PAD)
            self._vram.clear(0)
            self.buffer = self._vram.handle
            self._base = ffi.cast("char *", self._vram.base)
        self.ram_base = None
        if layout.ram_slots:
            size = layout.ram_slots * layout.ram_stride
            if device is None:
                self._ram_mem = AlignedBuffer(size)
                self.ram_base = self._ram_mem.ptr
            else:
                self._ram_mem = device.host_buffer_type.allocate(size)
                self.ram_base = ffi.cast("char *", self._ram_mem.base)
        self.staging = StagingPool(n_staging, layout.staging_bytes, device)

    def repoint(self, layer: int, kind: str, t) -> None:
        """Point layer `layer`'s `kind` tensor at its slots (before the first graph is built): its own type,
        `n_slots` experts `slot` bytes apart; a repacked one in the repack buffer with the traits it sets."""
        k, d = self.layout.kinds[kind], self.layout.kinds[kind].expert_dim
        repacked = (layer, kind) in self.layout.repacked
        t.buffer = self.repack_buffer if repacked else self.buffer
        t.data = self._base + self.layout.slot_offset(layer, kind, 0)
        t.ne[d] = self.layout.n_slots
        t.nb[d] = k.slot
        for i in range(d + 1, 4):
            t.nb[i] = t.nb[i - 1] * t.ne[i - 1]
        t.extra = ffi.NULL
        if repacked:
            lib.ggml_backend_buffer_init_tensor(self.repack_buffer, t)
            if t.extra == ffi.NULL or self.layout.n_slots < 2:   # MUL_MAT_ID runs repacked on 3-D weights
                raise ValueError(f"tensor {ffi.string(t.name).decode()}: the CPU has no repacked layout for it "
                                 f"with {self.layout.n_slots} slots")
        self.tensors[(layer, kind)] = t

    # -- addresses (host) -----------------------------------------------------------------
    def slot_ptr(self, layer: int, kind: str, slot: int):
        """Host address of `slot` as layer `layer`'s `kind` tensor sees it (host caches only)."""
        return self._base + self.layout.slot_offset(layer, kind, slot)

    def region_view(self, offset: int, size: int) -> memoryview:
        """`size` bytes of the host cache region from `offset` (an O_DIRECT destination)."""
        return self._view[offset:offset + size]

    def region_offset(self, ptr) -> int:
        return int(ffi.cast("uintptr_t", ptr)) - int(ffi.cast("uintptr_t", self._base))

    def ram_ptr(self, ram_slot: int, kind: str):
        return self.ram_base + self.layout.ram_slot_offset(ram_slot, kind)

    # -- filling slots ------------------------------------------------------------------------
    def deliver(self, layer: int, kind: str, src, slot: int) -> None:
        """Copy one expert of one kind from host memory (file layout) into its cache slot (device: an
        upload; repacked: converted)."""
        nb = self.layout.nbytes[(layer, kind)]
        if self.device is None:
            self.put(layer, kind, slot, 0, src, nb)
        else:
            self.upload((layer, kind), src, slot * self.layout.kinds[kind].slot, nb)
            self.zero_tail(layer, kind, slot)

    def put(self, layer: int, kind: str, slot: int, pos: int, src, nb: int) -> None:
        """Write `nb` bytes of one expert in the file's layout, from host memory `src`, at `pos` within its
        host slot: copied, or (repacked) converted by `ggml_backend_tensor_set` on a one-expert view."""
        dst = self.slot_ptr(layer, kind, slot) + pos
        if (layer, kind) not in self.layout.repacked:
            memmove(dst, src, nb)
            return
        t = self.tensors[(layer, kind)]
        row = int(t.nb[1])
        view = ffi.new("struct ggml_tensor *")
        view.type = t.type
        view.ne[0], view.ne[1], view.ne[2], view.ne[3] = int(t.ne[0]), nb // row, 1, 1
        view.nb[0], view.nb[1], view.nb[2], view.nb[3] = int(t.nb[0]), row, nb, nb
        view.buffer, view.data = self.repack_buffer, dst
        lib.ggml_backend_buffer_init_tensor(self.repack_buffer, view)
        if nb % row or view.extra != t.extra:
            raise ValueError(f"tensor {ffi.string(t.name).decode()}: {nb // row} rows of one expert do not repack "
                             "as the whole tensor does")
        lib.ggml_backend_tensor_set(view, src, 0, nb)

    def upload(self, key: tuple[int, str], src, dst_offset: int, nb: int) -> None:
        lib.ggml_backend_tensor_set(self.tensors[key], src, dst_offset, nb)

    def zero_tail(self, layer: int, kind: str, slot: int) -> None:
        """Device: zero what MMQ reads past layer `layer`'s expert in `slot` when that expert is smaller than
        the slot (per-layer types): the bytes a larger expert of another type left there could be NaN."""
        k, nb = self.layout.kinds[kind], self.layout.nbytes[(layer, kind)]
        tail = min(MMQ_PAD, k.slot - nb)
        if self.device is not None and tail > 0:
            if self._zeros is None:
                self._zeros = ffi.new("char[]", MMQ_PAD)
            # through a byte view of the whole region: past the last slot's smaller expert lies the end of
            # that layer's tensor (ggml_nbytes), which ggml_backend_tensor_set refuses to write beyond
            start = self.layout.slot_offset(layer, kind, slot) + nb
            lib.ggml_backend_tensor_set(self._region_bytes(), self._zeros, start, tail)

    def _region_bytes(self):
        """The device region (and its MMQ slack) as one I8 tensor, for writes that span tensors."""
        if self._whole is None:
            n = self.layout.region_bytes + MMQ_PAD
            t = ffi.new("struct ggml_tensor *")
            t.type = lib.GGML_TYPE_I8
            t.ne[0], t.ne[1], t.ne[2], t.ne[3] = n, 1, 1, 1
            t.nb[0], t.nb[1], t.nb[2], t.nb[3] = 1, n, n, n
            t.buffer, t.data = self.buffer, self._base
            self._whole = t
        return self._whole

    def resize_side_tensors(self, owned: OwnedLoad, layers) -> None:
        """Per-expert side tensors the file lacks (scales, biases: llama.cpp's optional `*_exps.scale` /
        `.bias`, given neutral values by the loader) are indexed by the same expert ids as the matmuls
        (get_rows / add_id): after the remap they must span `n_slots` rows, not `n_expert`."""
        n_expert, n_slots = self.layout.n_expert, self.layout.n_slots
        for name, (t, value) in owned.neutral_tensors.items():
            m = EXPS.match(name)
            if not m or int(m.group(1)) not in layers:
                continue
            dims = [d for d in range(4) if int(t.ne[d]) == n_expert]
            if not dims:
                raise ValueError(f"{owned.path}: tensor {name} has no expert dimension of {n_expert}")
            d = dims[-1]
            t.ne[d] = n_slots
            for k in range(d + 1, 4):
                t.nb[k] = t.nb[k - 1] * t.ne[k - 1]
            nbytes = int(lib.ggml_nbytes(t))
            if self.device is None:
                mem = AlignedBuffer(nbytes)
                buf = lib.ggml_backend_cpu_buffer_from_ptr(mem.ptr, mem.size)
                self._side.append((mem, buf))
                t.buffer, t.data = buf, mem.ptr
            else:
                mem = self.device.buffer_type.allocate(nbytes)
                self._side.append((mem, None))
                t.buffer, t.data = mem.handle, ffi.cast("void *", mem.base)
            lib.ggml_backend_tensor_set(t, ffi.new("float[]", [value] * (nbytes // 4)), 0, nbytes)

    # -- reporting ------------------------------------------------------------------------
    @property
    def cache_bytes(self) -> int:
        if self._vram is not None:
            return self._vram.size
        return self._region.size if self._region is not None else self.layout.region_bytes

    @property
    def ram_cache_bytes(self) -> int:
        return self.layout.ram_slots * self.layout.ram_stride

    @property
    def on_device(self) -> bool:
        """The cache region is device (non-host) memory."""
        return self.device is not None and not lib.ggml_backend_buffer_is_host(self.buffer)

    def close(self) -> None:
        for mem, buf in self._side:
            if buf is not None:
                lib.ggml_backend_buffer_free(buf)
            mem.close()
        self._side.clear()
        if self._ram_mem is not None:
            self.ram_base = None   # drop the cdata exporting the host buffer before releasing it
            self._ram_mem.close()
            self._ram_mem = None
        self.staging.close()
        self._base = None          # the cdata exporting the region, likewise
        self._view = None
        if self._vram is not None:
            self._vram.close()
            self._vram = None
        elif self.buffer is not None:
            lib.ggml_backend_buffer_free(self.buffer)   # wraps the region's memory: freed before it
            if self._region is not None:
                self._region.close()
            if self._repack_mem is not None:
                self._repack_mem.close()
                self._repack_mem = None
        self.buffer = self.repack_buffer = None

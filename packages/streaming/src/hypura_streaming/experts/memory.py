"""The memory expert streaming owns, and how llama.cpp's tensors come to point into it.

- The cache region: `n_slots` slots per kind (host memory wrapped as a ggml CPU buffer, or VRAM), into
  which each streamed layer's fused expert tensors are re-pointed with `ne[2] = n_slots`, so MUL_MAT_ID
  indexes cache slots instead of experts.
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

    def __init__(self, layout: ExpertLayout, device, n_staging: int) -> None:
        self.layout = layout
        self.device = device
        self._region: AlignedBuffer | None = None
        self._vram = None
        self._side: list = []
        self._ram_mem = None
        self.kind_tensor: dict[str, object] = {}   # one streamed tensor per kind: the target of uploads
        if device is None:
            self._region = AlignedBuffer(layout.region_bytes)
            self.buffer = lib.ggml_backend_cpu_buffer_from_ptr(self._region.ptr, self._region.size)
            self._base = self._region.ptr
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
        """Point layer `layer`'s `kind` tensor at its slots (before the first graph is built)."""
        k = self.layout.kinds[kind]
        t.buffer = self.buffer
        t.data = self._base + self.layout.slot_offset(layer, kind, 0)
        t.ne[2] = self.layout.n_slots
        t.nb[2] = k.slot
        t.nb[3] = self.layout.n_slots * k.slot
        self.kind_tensor[kind] = t

    # -- addresses (host) -----------------------------------------------------------------
    def slot_ptr(self, layer: int, kind: str, slot: int):
        """Host address of `slot` as layer `layer`'s `kind` tensor sees it (host caches only)."""
        return self._region.ptr + self.layout.slot_offset(layer, kind, slot)

    def region_view(self, offset: int, size: int) -> memoryview:
        """`size` bytes of the host cache region from `offset` (an O_DIRECT destination)."""
        return self._region.view[offset:offset + size]

    def region_offset(self, ptr) -> int:
        return int(ffi.cast("uintptr_t", ptr)) - int(ffi.cast("uintptr_t", self._region.ptr))

    def ram_ptr(self, ram_slot: int, kind: str):
        return self.ram_base + self.layout.ram_slot_offset(ram_slot, kind)

    # -- filling slots ------------------------------------------------------------------------
    def deliver(self, layer: int, kind: str, src, slot: int) -> None:
        """Copy one expert of one kind from host memory into its cache slot (device: an upload)."""
        stride = self.layout.kinds[kind].stride
        if self.device is None:
            memmove(self.slot_ptr(layer, kind, slot), src, stride)
        else:
            lib.ggml_backend_tensor_set(self.kind_tensor[kind], src, slot * stride, stride)

    def upload(self, kind: str, src, dst_offset: int, nb: int) -> None:
        lib.ggml_backend_tensor_set(self.kind_tensor[kind], src, dst_offset, nb)

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
        return self._vram.size if self._vram is not None else self._region.size

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
        if self._vram is not None:
            self._vram.close()
            self._vram = None
        elif self.buffer is not None:
            lib.ggml_backend_buffer_free(self.buffer)
            self._region.close()
        self.buffer = None

"""Slot pools: memory owned by Hypura that several layers' streamed tensors alias.

A layer's streamed tensors are re-pointed (before the first graph is built) into the slot that
layer uses; layer k of the streamed order uses slot k % n_slots, so pointers never change and
graphs stay reusable. Each slot holds the aligned file spans of one layer, so O_DIRECT reads land
in place and every tensor points at its exact bytes inside its span.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from hypura_llama import ffi, lib
from hypura_llama.errors import LlamaError

from .directio import ALIGN, align_up, aligned_span
from .loader import AlignedBuffer, TensorLocation

GAP = 1 << 20  # coalesce tensors closer than this into one read
MMQ_PAD = 512  # quantized batched matmuls read up to this many bytes past an expert/tensor: VRAM slack


class PinnedWindow:
    """`size` page-aligned bytes inside a buffer of `buffer_type` (pinned host memory of a GPU): an
    O_DIRECT destination and a DMA source. `view` is the window's bytes, `addr` its address."""

    def __init__(self, buffer_type, size: int) -> None:
        self.buffer = buffer_type.allocate(size + ALIGN)
        start = -self.buffer.base % ALIGN
        self.view = self.buffer.host_view(start, size)
        self.addr = self.buffer.base + start
        self.ptr = ffi.cast("char *", self.addr)

    def close(self) -> None:
        self.view.release()
        self.buffer.close()


@dataclass
class Span:
    file_offset: int    # aligned
    length: int         # aligned
    slot_offset: int    # where the span starts inside the slot


@dataclass
class LayerLayout:
    """Where one streamed layer's tensors live inside a slot."""

    key: object                              # layer id (dense) or (layer, expert)
    tensors: list[TensorLocation]
    spans: list[Span] = field(default_factory=list)
    tensor_slot_offset: dict[str, int] = field(default_factory=dict)
    size: int = 0                            # aligned bytes read per fill

    @classmethod
    def build(cls, key: object, tensors: list[TensorLocation]) -> LayerLayout:
        lay = cls(key, sorted(tensors, key=lambda t: t.offset))
        groups: list[list[TensorLocation]] = []
        for t in lay.tensors:
            if groups and t.offset - (groups[-1][-1].offset + groups[-1][-1].size) <= GAP:
                groups[-1].append(t)
            else:
                groups.append([t])
        pos = 0
        for g in groups:
            start, length = aligned_span(g[0].offset, g[-1].offset + g[-1].size - g[0].offset)
            lay.spans.append(Span(start, length, pos))
            for t in g:
                lay.tensor_slot_offset[t.name] = pos + (t.offset - start)
            pos += length
        lay.size = pos
        return lay


REPACK_ROWS = 256  # rows converted in place at a time: a multiple of every interleave (4, 8, 16 rows)


class InPlaceRepack:
    """Converts a tensor whose file bytes were read into its own storage (a buffer of a CPU extra buffer
    type) into that type's layout, in place, `REPACK_ROWS` rows at a time through a small per-thread
    scratch: the interleaved layouts keep each group of rows in the bytes those rows occupied, so a part
    converts like the whole. Where a part's row count would make the buffer choose another layout than the
    whole tensor's (its `extra`), the tensor is converted whole."""

    def __init__(self, buffer) -> None:
        self.buffer = buffer
        self._local = threading.local()
        self.converted_bytes = 0
        self._lock = threading.Lock()

    def _scratch(self, size: int):
        loc = self._local
        if getattr(loc, "size", 0) < size:
            loc.mem, loc.size = ffi.new("char[]", size), size
            loc.view = ffi.new("struct ggml_tensor *")
        return loc.mem, loc.view

    def _part(self, v, t, first: int, rows: int) -> bool:
        """Point the view `v` at rows [first, first + rows) of `t`; False if the buffer would lay them out
        otherwise than `t`."""
        v.type, v.buffer, v.extra = t.type, self.buffer, ffi.NULL
        v.ne[0], v.ne[1], v.ne[2], v.ne[3] = t.ne[0], rows, 1, 1
        v.nb[0], v.nb[1] = t.nb[0], t.nb[1]
        v.nb[2] = v.nb[3] = rows * t.nb[1]
        v.data = ffi.cast("char *", t.data) + first * t.nb[1]
        return lib.ggml_backend_buffer_init_tensor(self.buffer, v) == 0 and v.extra == t.extra

    def convert(self, t) -> None:
        rows, row = int(t.ne[1]) * int(t.ne[2]) * int(t.ne[3]), int(t.nb[1])
        step = REPACK_ROWS if rows > REPACK_ROWS else rows
        mem, v = self._scratch(step * row)
        if step < rows and not (self._part(v, t, 0, step) and self._part(v, t, 0, rows % step or step)):
            step = rows
            mem, v = self._scratch(rows * row)
        for first in range(0, rows, step):
            n = min(step, rows - first)
            if not self._part(v, t, first, n):
                raise LlamaError(f"cannot convert {ffi.string(t.name).decode()} in place")
            ffi.memmove(mem, v.data, n * row)
            lib.ggml_backend_tensor_set(v, mem, 0, n * row)
        with self._lock:
            self.converted_bytes += rows * row


class _BufferMemory:
    """`size` page-aligned bytes inside a ggml buffer (`ptr`, `view`), an O_DIRECT destination."""

    def __init__(self, buffer_type, size: int) -> None:
        self.buffer = buffer_type.allocate(size + ALIGN)
        self.size = size
        self.ptr = ffi.cast("char *", self.buffer.base + (-self.buffer.base % ALIGN))
        self.view = memoryview(ffi.buffer(self.ptr, size))

    def close(self) -> None:
        self.view.release()
        self.buffer.close()


class HostSlotPool:
    """n_slots × slot_size bytes of page-aligned host memory, wrapped as a ggml CPU buffer. With
    `repack_type` (a CPU extra buffer type) the memory is a buffer of that type: tensors re-pointed with
    `repacked=True` compute from its layout, filled by reading their file bytes in place and `convert`."""

    def __init__(self, n_slots: int, slot_size: int, repack_type=None) -> None:
        self.n_slots = n_slots
        self.slot_size = align_up(slot_size)
        size = self.n_slots * self.slot_size
        self.mem = AlignedBuffer(size) if repack_type is None else _BufferMemory(repack_type, size)
        self.buffer = lib.ggml_backend_cpu_buffer_from_ptr(self.mem.ptr, self.mem.size)
        if self.buffer == ffi.NULL:
            raise LlamaError("could not wrap the slot pool as a ggml buffer")
        self.repacker = InPlaceRepack(self.mem.buffer.handle) if repack_type is not None else None

    @property
    def nbytes(self) -> int:
        return self.mem.size

    def slot_view(self, slot: int) -> memoryview:
        base = slot * self.slot_size
        return self.mem.view[base:base + self.slot_size]

    device = None  # host memory: reads land in place, nothing to upload

    def upload(self, slot: int, tensors: list[tuple[object, int]], source: int | None = None) -> None:
        pass

    def wait(self, slot: int) -> None:
        pass

    def repoint(self, tensor, slot: int, offset: int, repacked: bool = False) -> None:
        """Point a model tensor at bytes inside a slot (before the first graph is built); `repacked`: in
        the repack buffer type's layout (its traits set by the buffer)."""
        tensor.data = self.mem.ptr + slot * self.slot_size + offset
        if not repacked:
            tensor.buffer = self.buffer
            return
        tensor.buffer, tensor.extra = self.repacker.buffer, ffi.NULL
        if lib.ggml_backend_buffer_init_tensor(tensor.buffer, tensor) != 0 or tensor.extra == ffi.NULL:
            raise LlamaError(f"{ffi.string(tensor.name).decode()} cannot be repacked in the slot pool")

    def close(self) -> None:
        if self.buffer is not None:
            lib.ggml_backend_buffer_free(self.buffer)
            self.buffer = None
            self.mem.close()


class RepackSlots:
    """Per-slot storage in one CPU extra buffer type (CPU_REPACK …) for the streamed tensors that
    llama.cpp's default load repacks: a Hypura-owned buffer of that type, `n_slots` regions of
    `slot_size` bytes. A tensor re-pointed here gets the buffer's per-tensor traits (`extra`, set by
    `ggml_backend_buffer_init_tensor`), and is filled only by `fill`: `ggml_backend_tensor_set`, which
    converts the file's bytes (staged in the host slot) into the buffer type's layout."""

    def __init__(self, buffer_type, n_slots: int, slot_size: int) -> None:
        self.buffer_type = buffer_type
        self.align = max(64, int(buffer_type.alignment))
        self.n_slots = n_slots
        self.slot_size = align_up(slot_size, self.align)
        self.buffer = buffer_type.allocate(self.n_slots * self.slot_size)
        self.converted_bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.buffer.size

    def repoint(self, tensor, slot: int, offset: int) -> None:
        """Point a model tensor at `offset` in `slot` (before the first graph is built) and let the
        buffer set its traits."""
        tensor.buffer = self.buffer.handle
        tensor.data = ffi.cast("void *", self.buffer.base + slot * self.slot_size + offset)
        tensor.extra = ffi.NULL
        if lib.ggml_backend_buffer_init_tensor(self.buffer.handle, tensor) != 0 or tensor.extra == ffi.NULL:
            raise LlamaError(f"{self.buffer_type.name} cannot hold {ffi.string(tensor.name).decode()}")

    def fill(self, tensor, source: int) -> None:
        """Convert the tensor's file bytes at host address `source` into its storage (any thread)."""
        n = lib.ggml_nbytes(tensor)
        lib.ggml_backend_tensor_set(tensor, ffi.cast("void *", source), 0, n)
        with self._lock:
            self.converted_bytes += n

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None


class DeviceSlotPool:
    """Slots in a compute device's memory (CUDA VRAM), filled through pinned staging.

    Reads land (O_DIRECT) in the slot's pinned host staging; uploads run asynchronously on
    Hypura's own backend stream and are fenced with one event per slot, so they overlap the
    compute stream. Only the decode thread issues uploads."""

    def __init__(self, device, n_slots: int, slot_size: int, staging: bool = True) -> None:
        """`staging`: allocate pinned staging for NVMe reads (not needed when every layer is filled
        from a pinned RAM copy)."""
        from hypura_llama import BufferType

        self.device = device
        self.n_slots = n_slots
        self.slot_size = align_up(slot_size)
        buft: BufferType = device.buffer_type
        self.vram = buft.allocate(self.n_slots * self.slot_size + MMQ_PAD)
        self.vram.clear(0)
        host = device.host_buffer_type
        if host is None:
            raise LlamaError(f"{device.name} has no pinned host buffer type")
        # where reads land (O_DIRECT wants page-aligned destinations)
        self.staging = PinnedWindow(host, self.n_slots * self.slot_size) if staging else None
        self.backend = lib.ggml_backend_dev_init(device.handle, ffi.NULL)
        if self.backend == ffi.NULL:
            raise LlamaError(f"could not create a stream on {device.name}")
        self.events = [lib.ggml_backend_event_new(device.handle) for _ in range(n_slots)]
        self.uploaded_bytes = 0

    @property
    def buffer(self):
        return self.vram.handle

    @property
    def nbytes(self) -> int:
        return self.vram.size

    def slot_view(self, slot: int) -> memoryview:
        """The slot's pinned staging (where reads land)."""
        if self.staging is None:
            raise LlamaError("this slot pool was created without staging (RAM-tier layers only)")
        return self.staging.view[slot * self.slot_size:(slot + 1) * self.slot_size]

    def repoint(self, tensor, slot: int, offset: int, repacked: bool = False) -> None:
        """Point a model tensor at VRAM inside a slot; `repacked` must be False (nothing repacks where a GPU
        computes)."""
        if repacked:
            raise ValueError("a device slot pool holds weights in their file layout only")
        tensor.buffer = self.vram.handle
        tensor.data = ffi.cast("void *", self.vram.base + slot * self.slot_size + offset)

    def upload(self, slot: int, tensors: list[tuple[object, int]], source: int | None = None) -> None:
        """Asynchronously copy each (tensor, offset in slot) from the slot's staging (or from
        `source`, a pinned host address laid out like the slot) to VRAM, then fence."""
        stage = source if source is not None else self.staging.addr + slot * self.slot_size
        for t, off in tensors:
            n = lib.ggml_nbytes(t)
            lib.ggml_backend_tensor_set_async(self.backend, t, ffi.cast("void *", stage + off), 0, n)
            self.uploaded_bytes += n
        lib.ggml_backend_event_record(self.events[slot], self.backend)

    def wait(self, slot: int) -> None:
        lib.ggml_backend_event_synchronize(self.events[slot])

    def close(self) -> None:
        if self.backend is not None:
            lib.ggml_backend_synchronize(self.backend)
            for ev in self.events:
                lib.ggml_backend_event_free(ev)
            lib.ggml_backend_free(self.backend)
            self.backend = None
            self.vram.close()
            if self.staging is not None:
                self.staging.close()

"""ggml backend devices, buffer types and buffers."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ._lib import cstr, ensure_init, ffi, lib
from .errors import LlamaError, check_null
from .owned import Owned, c_property

_DEV_TYPES = {
    lib.GGML_BACKEND_DEVICE_TYPE_CPU: "cpu",
    lib.GGML_BACKEND_DEVICE_TYPE_GPU: "gpu",
    lib.GGML_BACKEND_DEVICE_TYPE_IGPU: "igpu",
    lib.GGML_BACKEND_DEVICE_TYPE_ACCEL: "accel",
}


@dataclass(frozen=True)
class Device:
    """One ggml backend device (CPU, CUDA0, Metal …)."""

    index: int
    name: str
    description: str
    type: str
    memory_total: int
    memory_free: int
    handle: object  # ggml_backend_dev_t

    @property
    def buffer_type(self) -> BufferType:
        return BufferType(lib.ggml_backend_dev_buffer_type(self.handle))

    @property
    def host_buffer_type(self) -> BufferType | None:
        """Pinned host memory for fast uploads to this device (None on the CPU)."""
        buft = lib.ggml_backend_dev_host_buffer_type(self.handle)
        return None if buft == ffi.NULL else BufferType(buft)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "type": self.type,
                "memory_total": self.memory_total, "memory_free": self.memory_free}


def devices() -> list[Device]:
    """All devices of the ggml backend registry, with their current free/total memory."""
    ensure_init()
    out = []
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        lib.ggml_backend_dev_memory(dev, free, total)
        out.append(Device(i, cstr(lib.ggml_backend_dev_name(dev)), cstr(lib.ggml_backend_dev_description(dev)),
                          _DEV_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown"), int(total[0]), int(free[0]), dev))
    return out


def list_devices() -> list[dict]:
    """Devices as plain dicts (name, description, type, memory_total, memory_free)."""
    return [d.as_dict() for d in devices()]


def gpu_devices() -> list[Device]:
    return [d for d in devices() if d.type in ("gpu", "igpu")]


def measure_upload_bandwidth(device_name: str, size: int = 256 << 20, repeats: int = 4) -> float | None:
    """Host→device bandwidth in bytes/s of `device_name`: a pinned host buffer (the device's host buffer
    type, what streaming stages through) copied into device memory with ggml_backend_tensor_set, the best of
    `repeats` copies after one warm-up. None for a device without pinned host memory (the CPU)."""
    dev = next((d for d in gpu_devices() if d.name == device_name), None)
    host = dev.host_buffer_type if dev is not None else None
    if host is None:
        return None
    size -= size % 4
    params = ffi.new("struct ggml_init_params *", {"mem_size": 1 << 16, "mem_buffer": ffi.NULL, "no_alloc": True})
    ctx = check_null(lib.ggml_init(params[0]), "ggml_init failed")
    try:
        with host.allocate(size) as src, dev.buffer_type.allocate(size) as dst:
            t = lib.ggml_new_tensor(ctx, lib.GGML_TYPE_F32, 1, ffi.new("int64_t[1]", [size // 4]))
            t.buffer, t.data = dst.handle, lib.ggml_backend_buffer_get_base(dst.handle)
            data = lib.ggml_backend_buffer_get_base(src.handle)
            lib.ggml_backend_tensor_set(t, data, 0, size)       # warm-up: the driver's first-use costs
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                lib.ggml_backend_tensor_set(t, data, 0, size)   # synchronous: returns when the copy is done
                times.append(time.perf_counter() - t0)
            return size / min(times)
    finally:
        lib.ggml_free(ctx)


class BufferType:
    """A ggml_backend_buffer_type_t: where a buffer's memory lives."""

    def __init__(self, handle) -> None:
        self.handle = handle

    @classmethod
    def cpu(cls) -> BufferType:
        return cls(lib.ggml_backend_cpu_buffer_type())

    name = c_property(lib.ggml_backend_buft_name, cstr)
    is_host = c_property(lib.ggml_backend_buft_is_host, bool)
    alignment = c_property(lib.ggml_backend_buft_get_alignment)

    def alloc_size(self, tensor) -> int:
        """Bytes a tensor needs in this buffer type (may include padding)."""
        return int(lib.ggml_backend_buft_get_alloc_size(self.handle, tensor))

    def allocate(self, size: int) -> Buffer:
        return Buffer.allocate(self, size)

    def __repr__(self) -> str:
        return f"BufferType({self.name})"


def cpu_weight_buffer_type(ggml_type: int, shape, n_expert_used: int = 1) -> BufferType | None:
    """The CPU extra buffer type (CPU_REPACK, …) that llama.cpp's default load gives a weight of this type and
    shape — 2-D: a MUL_MAT weight, 3-D with ne[2] > 1: MUL_MAT_ID experts — decided as its loader decides (the op
    on a dummy buffer of each extra type, the CPU device's supports_op). None: plain CPU memory. Weights in such
    a buffer are stored in its own layout: `ggml_backend_tensor_set` converts (repacks) them."""
    ensure_init()
    ne = [int(x) for x in shape] + [1, 1]
    n_dims = 3 if ne[2] > 1 else 2
    handle = lib.hypura_cpu_extra_buft(int(ggml_type), ne[0], ne[1], ne[2] if n_dims == 3 else 1, n_dims,
                                       max(1, int(n_expert_used)))
    return None if handle == ffi.NULL else BufferType(handle)


class Buffer(Owned):
    """An owned ggml backend buffer, freed on close()."""

    def __init__(self, handle) -> None:
        self.handle = handle

    @classmethod
    def allocate(cls, buft: BufferType, size: int) -> Buffer:
        ensure_init()
        return cls(check_null(lib.ggml_backend_buft_alloc_buffer(buft.handle, max(int(size), 1)),
                              f"could not allocate {size} bytes of {buft.name}"))

    @property
    def base(self) -> int:
        return int(ffi.cast("uintptr_t", lib.ggml_backend_buffer_get_base(self.handle)))

    size = c_property(lib.ggml_backend_buffer_get_size)
    is_host = c_property(lib.ggml_backend_buffer_is_host, bool)
    name = c_property(lib.ggml_backend_buffer_name, cstr)

    def clear(self, value: int = 0) -> None:
        lib.ggml_backend_buffer_clear(self.handle, value)

    def host_view(self, offset: int = 0, size: int | None = None) -> memoryview:
        """Writable memoryview of a host buffer's bytes."""
        if not self.is_host:
            raise LlamaError(f"buffer {self.name} is not in host memory")
        size = self.size - offset if size is None else size
        ptr = ffi.cast("char *", lib.ggml_backend_buffer_get_base(self.handle)) + offset
        return memoryview(ffi.buffer(ptr, size))

    def _free(self) -> None:
        lib.ggml_backend_buffer_free(self.handle)

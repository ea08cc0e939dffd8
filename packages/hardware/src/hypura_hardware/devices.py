"""Compute devices (through the binding's ggml backend registry), the CPU, RAM bandwidth, compute.

The device list comes from ``hypura_llama.list_devices()``: dicts with ``name``, ``description``,
``type`` ("cpu" | "gpu" | "igpu" | "accel"), ``memory_total`` and ``memory_free`` in bytes. On
macOS the Metal device's ``memory_total`` is Metal's *recommended working set*
(``recommendedMaxWorkingSetSize``), not the machine's RAM: that is the GPU tier's size there.
The binding is imported lazily, so this package imports no native code until asked to.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GPU_TYPES = ("gpu", "igpu")
BINDING_MISSING = "the native binding is not built: run `make build`"


def _binding():
    try:
        import hypura_llama
    except ImportError as exc:
        raise RuntimeError(BINDING_MISSING) from exc
    return hypura_llama


def list_compute_devices() -> list[dict]:
    """Every ggml backend device: ``name``, ``description``, ``type``, ``memory_total``, ``memory_free``.

    Raises RuntimeError when the native binding is not built (or lacks ``list_devices``).
    """
    binding = _binding()
    list_devices = getattr(binding, "list_devices", None)
    if list_devices is None:
        raise RuntimeError(f"{BINDING_MISSING} (hypura_llama has no list_devices)")
    return [{"name": str(d["name"]), "description": str(d.get("description", "")), "type": str(d["type"]),
             "memory_total": int(d["memory_total"]), "memory_free": int(d["memory_free"])}
            for d in list_devices()]


def primary_gpu(devices: list[dict]) -> dict | None:
    """The GPU tier's device: the discrete (else integrated) GPU with the most memory, or None."""
    for kind in GPU_TYPES:
        gpus = [d for d in devices if d["type"] == kind]
        if gpus:
            return max(gpus, key=lambda d: d["memory_total"])
    return None


def measure_upload_bps(device: dict | None) -> float | None:
    """Host→device upload bandwidth (pinned staging → device memory) in bytes/s; None without a GPU.

    Measured by ``hypura_llama.measure_upload_bandwidth`` (256 MiB copies, best of four); None when
    the device has no pinned host memory or the binding lacks the measurement.
    """
    if device is None:
        return None
    measure = getattr(_binding(), "measure_upload_bandwidth", None)
    if measure is None:
        return None
    value = measure(device["name"])
    return None if value is None else float(value)


def cpu_model() -> str:
    """The CPU's model name, best effort."""
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") or line.startswith("Hardware"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def last_level_cache_bytes() -> int | None:
    """Size of the CPU's largest (last-level) cache in bytes, None where the OS does not say. Linux: sysfs
    (``/sys/devices/system/cpu/cpu0/cache/index*/size``; in a VM, what the hypervisor reports: a host's whole L3
    can be 480 MiB); macOS: ``sysctl hw.l3cachesize`` / ``hw.l2cachesize``."""
    sizes = []
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (d / "size").read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    if not sizes and sys.platform == "darwin":
        for key in ("hw.l3cachesize", "hw.l2cachesize"):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                continue
            if out.isdigit() and int(out) > 0:
                sizes.append(int(out))
                break
    return max(sizes) if sizes else None


def measure_ram_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Host memory bandwidth in bytes/s: best of ``repeats`` numpy copies, counting read + write."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault both in before timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def measure_cpu_flops(n: int = 1024, seconds: float = 0.3) -> float:
    """A float32 matmul rate in FLOP/s (numpy's BLAS, all cores): an estimate of CPU compute."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, caches
    runs, start = 0, time.perf_counter()
    while True:
        a @ b
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n ** 3 * runs / elapsed

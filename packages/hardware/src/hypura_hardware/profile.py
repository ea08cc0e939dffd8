"""The hardware profile: measure once, cache as JSON, re-measure when stale.

The profile is a plain dict, the shape ``hypura_placement.hardware_spec.HardwareSpec`` reads::

    name         "local"
    host         hostname
    measured_at  unix time of the measurement
    gpu          None (CPU-only: the compute tier is RAM) or
                 {name, description, type, memory_total, memory_free, bandwidth (None: not measured)}
    ram          {total, available, physical_total, bandwidth, cgroup (None or the binding limit)}
    disk         {seq_read_bps, rand_read_bps, direct_io, path, file_bytes, reads: [per-pattern table]}
    upload_bps   host→GPU bytes/s (pinned → device memory, measured), None without a GPU
    cpu          {cores, model, arch, flops, decode_bps (weight bytes/s of a resident CPU decode; None: not
                 measured), decode (how: hypura_engine.decode_rate)}
    devices      every ggml backend device
    version, models_dir, fingerprint, measure_seconds, refreshed_at

All sizes are bytes, all bandwidths bytes/s. A cached profile is stale after ``MAX_AGE`` seconds,
when its schema version differs, when the machine changed (hostname, core count, RAM total,
device list) or when the models directory differs. Free memory (``ram.available``, ``gpu.memory_free``)
is re-read on every load, since it changes from minute to minute.
"""
from __future__ import annotations

import json
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from .devices import (list_compute_devices, measure_cpu_flops, measure_ram_bandwidth, measure_upload_bps,
                      primary_gpu, cpu_cores, cpu_model)
from .dirs import default_models_dir, user_cache_dir
from .files import write_json_atomic
from .memory import ram_info
from .storage import DEFAULT_FILE_BYTES, default_patterns, measure_storage

VERSION = 3   # 2: cpu.decode_bps; 3: measured on weights larger than the last-level cache
MAX_AGE = 7 * 24 * 3600
CACHE_NAME = "profile.json"


def cache_path() -> Path:
    """Where the profile is cached: ``<user cache dir>/profile.json``."""
    return user_cache_dir() / CACHE_NAME


def fingerprint(devices: list[dict], ram: dict) -> dict:
    """What identifies the machine: a change in any of these makes a cached profile stale.

    RAM is the physical total: a cgroup limit is not a different machine (it is re-read on every load
    with the free memory), and re-measuring inside a tight limit would itself exhaust it."""
    return {"host": socket.gethostname(), "cores": cpu_cores(), "ram_total": ram.get("physical_total", ram["total"]),
            "devices": sorted([d["name"], d["type"], d["memory_total"]] for d in devices)}


def _gpu_entry(devices: list[dict]) -> dict | None:
    gpu = primary_gpu(devices)
    return None if gpu is None else {**gpu, "bandwidth": None}


def measure(models_dir: Path | str | None = None, *, devices: list[dict] | None = None,
            progress: bool = True, disk_file_bytes: int = DEFAULT_FILE_BYTES,
            disk_seconds: float = 0.5, ram_bytes: int = 256 << 20, compute_seconds: float = 0.3,
            decode_rate: Callable[[], dict] | None = None) -> dict:
    """Measure this machine now (about 12 s) and return the profile dict.

    ``devices`` defaults to the binding's device list (RuntimeError if the binding is not built);
    the other options trade accuracy for time (tests use small values). ``decode_rate`` measures how fast the
    CPU's kernels consume weights in a decode (``{"bps", ...}``; ``hypura_engine.decode_rate``, which can build
    and run a model: this package cannot); None leaves ``cpu.decode_bps`` unmeasured.
    """
    start = time.perf_counter()
    models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
    patterns = default_patterns()
    bar = tqdm(total=6 + len(patterns), desc="hypura profile", unit="step", file=sys.stderr,
               disable=not progress, leave=False)

    started: list[bool] = []

    def step(label: str) -> None:  # a phase begins: the previous one is done
        bar.set_postfix_str(label, refresh=False)
        bar.update(1 if started else 0)
        started.append(True)

    try:
        step("devices")
        if devices is None:
            devices = list_compute_devices()
        gpu = _gpu_entry(devices)
        step("ram")
        ram = ram_info()
        ram["bandwidth"] = measure_ram_bandwidth(ram_bytes)
        step("cpu compute")
        cpu = {"cores": cpu_cores(), "model": cpu_model(), "arch": platform.machine(),
               "flops": measure_cpu_flops(seconds=compute_seconds)}
        step("cpu decode")
        decode = decode_rate() if decode_rate is not None else None
        cpu.update(decode_bps=decode["bps"] if decode else None, decode=decode)
        disk = measure_storage(models_dir, disk_file_bytes, patterns, disk_seconds, step=step)
        step("upload")
        upload = measure_upload_bps(primary_gpu(devices))
        step("")
    finally:
        bar.close()
    return {"version": VERSION, "name": "local", "host": socket.gethostname(), "measured_at": time.time(),
            "measure_seconds": time.perf_counter() - start, "models_dir": str(Path(models_dir).resolve()),
            "gpu": gpu, "ram": ram, "disk": disk, "upload_bps": upload, "cpu": cpu, "devices": devices,
            "fingerprint": fingerprint(devices, ram)}


def staleness(profile: dict, current: dict, models_dir: Path | str | None = None,
              now: float | None = None, max_age: float = MAX_AGE) -> str | None:
    """Why a cached profile must be re-measured, or None if it is still good.

    ``current`` is the machine's :func:`fingerprint` now.
    """
    if profile.get("version") != VERSION:
        return f"profile version {profile.get('version')} is not {VERSION}"
    age = (time.time() if now is None else now) - float(profile.get("measured_at", 0))
    if age > max_age or age < 0:
        return f"measured {age / 86400:.1f} days ago"
    old = profile.get("fingerprint") or {}
    for key in sorted(current):
        if old.get(key) != current[key]:
            return f"machine changed: {key} was {old.get(key)!r}, now {current[key]!r}"
    if models_dir is not None and profile.get("models_dir") != str(Path(models_dir).expanduser().resolve()):
        return f"models directory changed: was {profile.get('models_dir')}"
    return None


def read_cached(path: Path | None = None) -> dict | None:
    """The cached profile, or None if there is none or it is unreadable."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_cached(profile: dict, path: Path | None = None) -> Path:
    """Write ``profile`` atomically to the cache; returns the path."""
    return write_json_atomic(path or cache_path(), profile, indent=1, sort_keys=True)


def refresh_free_memory(profile: dict, devices: list[dict], ram: dict) -> dict:
    """A copy of ``profile`` with RAM availability and device free memory read just now."""
    fresh = {**profile, "ram": {**profile["ram"], **ram}, "devices": devices, "refreshed_at": time.time()}
    gpu = _gpu_entry(devices)
    if gpu is not None and profile.get("gpu") is not None:
        fresh["gpu"] = {**profile["gpu"], "memory_free": gpu["memory_free"], "memory_total": gpu["memory_total"]}
    return fresh


def load_or_measure(models_dir: Path | str | None = None, force: bool = False, *,
                    devices: list[dict] | None = None, cache: Path | None = None,
                    progress: bool = True, log: Callable[[str], None] | None = None,
                    **measure_options) -> dict:
    """The cached profile if still good (free memory refreshed), else a new measurement, cached.

    ``models_dir`` None keeps the cached profile's directory (or the default one when measuring).
    ``measure_options`` pass to :func:`measure` (``disk_file_bytes``, ``disk_seconds`` ...).
    """
    cache = cache or cache_path()
    if devices is None:
        devices = list_compute_devices()
    ram = ram_info()
    if not force:
        cached = read_cached(cache)
        if cached is not None:
            reason = staleness(cached, fingerprint(devices, ram), models_dir)
            if reason is None:
                return refresh_free_memory(cached, devices, ram)
            if log:
                log(f"re-measuring: {reason}")
    profile = measure(models_dir, devices=devices, progress=progress, **measure_options)
    write_cached(profile, cache)
    return profile

"""Hardware the planner plans for: a measured profile (``hypura_hardware``) or a named preset.

The shape is the profile dict's (all sizes bytes, all bandwidths bytes/s)::

    name, gpu: None | {name, memory_total, memory_free, bandwidth}, ram: {total, available, bandwidth},
    disk: {seq_read_bps, rand_read_bps}, upload_bps (host→GPU; None without GPU), cpu: {cores, flops,
    decode_bps (optional: weight bytes/s llama.cpp's CPU kernels consume in a decode, ``hypura profile``)},
    unified_memory (optional: GPU memory is carved out of RAM, as on Apple silicon)

Presets (figures and sources; where a figure is an estimate it says so):

- ``mac-m1max-32g``: Apple M1 Max, 32 GB unified memory at 400 GB/s (Apple M1 Max spec sheet). Metal's
  ``recommendedMaxWorkingSetSize`` is ~2/3 of RAM on machines of ≤ 36 GB (~21.3 GiB, as llama.cpp's Metal
  log prints on such machines): that is the GPU budget. Internal SSD ~5 GB/s sequential read (1 TB MacBook
  Pro 2021, Blackmagic/AJA disk tests), ~3 GB/s for expert-sized random reads (estimate). 32-core GPU
  10.4 TFLOPS f32 (Apple). RAM → GPU "upload" needs no copy on unified memory; modelled as a 100 GB/s memcpy.
- ``mac-m2ultra-192g``: Apple M2 Ultra, 192 GB at 800 GB/s (Apple); working set ~75% of RAM (147456 MB in
  llama.cpp's Metal log on this machine); SSD ~6 GB/s (Mac Studio 2023 disk tests; estimate); 76-core GPU
  27.2 TFLOPS f32 (Apple).
- ``rtx4090-64g``: GeForce RTX 4090, 24 GB GDDR6X at 1008 GB/s, 82.6 TFLOPS f32 (NVIDIA Ada whitepaper);
  PCIe 4.0 x16 pinned copies ~25 GB/s (32 GB/s theoretical); 64 GB dual-channel DDR5-5600 ~70 GB/s measured
  in typical AIDA64 runs (estimate); PCIe 4.0 NVMe (Samsung 990 Pro: 7.45 GB/s sequential read spec, ~6.5 GB/s
  with O_DIRECT, ~4 GB/s for MB-sized random reads, estimates); 16-core desktop CPU.
- ``h100-80g``: the lent H100 machine: H100 80 GB HBM3, 3.35 TB/s and 67 TFLOPS f32 (NVIDIA H100 SXM
  datasheet); 128 GiB RAM, 16 cores (the machine's description); disk 1.65 GB/s with O_DIRECT (measured,
  DESIGN.md); host→device 25 GB/s for pinned copies (PCIe Gen5 x16 is 64 GB/s theoretical; DESIGN.md saw
  12 GB/s with synchronous small copies: estimate between).
- ``cpu-2c-24g``: this development machine: no GPU (the compute tier is RAM), 24 GiB RAM at ~25 GB/s and
  ~63 GFLOP/s f32 on 2 cores (measured with ``hypura_hardware``); a resident Q4_0 decode consumes weights at
  8.8 GB/s there (``hypura_engine.decode_rate``); disk 1 GB/s (estimate: run ``hypura profile``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GB, GiB = 1_000_000_000, 1 << 30
ASSUMED_GPU_BANDWIDTH = 500e9   # used when a profile has a GPU but did not measure its memory bandwidth


@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_total: int
    memory_free: int
    bandwidth: float | None = None      # device memory bytes/s; None: not measured


@dataclass(frozen=True)
class HardwareSpec:
    """One machine: what the planner reads from a profile or a preset."""
    name: str
    gpu: GPUSpec | None
    ram_total: int
    ram_available: int
    ram_bandwidth: float
    disk_seq_read_bps: float
    disk_rand_read_bps: float
    upload_bps: float | None
    cpu_cores: int
    cpu_flops: float
    gpu_flops: float | None = None
    unified_memory: bool = False
    cpu_decode_bps: float | None = None   # measured weight bytes/s of a CPU decode; None: the RAM bandwidth bounds it

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HardwareSpec:
        """From the profile/preset dict shape (extra keys ignored; missing bandwidths get safe defaults)."""
        g = d.get("gpu")
        gpu = None if not g else GPUSpec(str(g.get("name", "gpu")), int(g["memory_total"]),
                                         int(g.get("memory_free", g["memory_total"])), g.get("bandwidth"))
        ram, disk, cpu = d["ram"], d.get("disk") or {}, d.get("cpu") or {}
        seq = float(disk.get("seq_read_bps") or 1e9)
        return cls(name=str(d.get("name", "custom")), gpu=gpu, ram_total=int(ram["total"]),
                   ram_available=int(ram.get("available", ram["total"])),
                   ram_bandwidth=float(ram.get("bandwidth") or 20e9), disk_seq_read_bps=seq,
                   disk_rand_read_bps=float(disk.get("rand_read_bps") or seq),
                   upload_bps=None if gpu is None else float(d.get("upload_bps") or 12e9),
                   cpu_cores=int(cpu.get("cores", 1)), cpu_flops=float(cpu.get("flops") or 50e9),
                   gpu_flops=(g or {}).get("flops"), unified_memory=bool(d.get("unified_memory", False)),
                   cpu_decode_bps=float(cpu["decode_bps"]) if cpu.get("decode_bps") else None)

    def to_dict(self) -> dict[str, Any]:
        """The profile-shaped dict (``from_dict`` round-trips it)."""
        gpu = None if self.gpu is None else {**asdict(self.gpu), "flops": self.gpu_flops}
        return {"name": self.name, "gpu": gpu, "unified_memory": self.unified_memory,
                "ram": {"total": self.ram_total, "available": self.ram_available, "bandwidth": self.ram_bandwidth},
                "disk": {"seq_read_bps": self.disk_seq_read_bps, "rand_read_bps": self.disk_rand_read_bps},
                "upload_bps": self.upload_bps, "cpu": {"cores": self.cpu_cores, "flops": self.cpu_flops,
                        **({"decode_bps": self.cpu_decode_bps} if self.cpu_decode_bps else {})}}

    @property
    def compute_bandwidth(self) -> float:
        """The rate at which the compute device's kernels read weights in a decode: GPU memory bandwidth, or
        without a GPU the measured CPU decode rate (``cpu.decode_bps``), else the RAM bandwidth (an upper bound)."""
        if self.gpu is not None:
            return float(self.gpu.bandwidth or ASSUMED_GPU_BANDWIDTH)
        return float(self.cpu_decode_bps or self.ram_bandwidth)

    @property
    def compute_flops(self) -> float:
        """f32 FLOP/s of the compute device (a GPU without a figure: 20 FLOP per byte of its bandwidth)."""
        if self.gpu is None:
            return self.cpu_flops
        return float(self.gpu_flops or 20 * self.compute_bandwidth)


def _preset(name: str, gpu: tuple[str, float, float, float] | None, ram: float, ram_bw: float, seq: float,
            rand: float, upload: float | None, cores: int, cpu_flops: float, unified: bool = False,
            decode: float | None = None) -> dict:
    g = None if gpu is None else {"name": gpu[0], "memory_total": int(gpu[1]), "memory_free": int(gpu[1]),
                                  "bandwidth": gpu[2], "flops": gpu[3]}
    avail = ram * 0.85 if unified else ram * 0.9      # what the OS and apps leave (estimate)
    return {"name": name, "gpu": g, "unified_memory": unified,
            "ram": {"total": int(ram), "available": int(avail), "bandwidth": ram_bw},
            "disk": {"seq_read_bps": seq, "rand_read_bps": rand}, "upload_bps": upload,
            "cpu": {"cores": cores, "flops": cpu_flops, **({"decode_bps": decode} if decode else {})}}


PRESETS: dict[str, dict] = {p["name"]: p for p in (
    _preset("mac-m1max-32g", ("Apple M1 Max (32-core GPU)", 32 * GiB * 2 / 3, 400 * GB, 10.4e12), 32 * GiB,
            400 * GB, 5.0 * GB, 3.0 * GB, 100 * GB, 10, 0.4e12, unified=True),
    _preset("mac-m2ultra-192g", ("Apple M2 Ultra (76-core GPU)", 144 * GiB, 800 * GB, 27.2e12), 192 * GiB,
            800 * GB, 6.0 * GB, 4.0 * GB, 200 * GB, 24, 1.0e12, unified=True),
    _preset("rtx4090-64g", ("NVIDIA GeForce RTX 4090", 24 * GiB, 1008 * GB, 82.6e12), 64 * GiB, 70 * GB,
            6.5 * GB, 4.0 * GB, 25 * GB, 16, 1.0e12),
    _preset("h100-80g", ("NVIDIA H100 80GB HBM3", 80 * GiB, 3350 * GB, 67e12), 128 * GiB, 100 * GB,
            1.65 * GB, 1.5 * GB, 25 * GB, 16, 1.0e12),
    _preset("cpu-2c-24g", None, 24 * GiB, 25 * GB, 1.0 * GB, 0.8 * GB, None, 2, 63e9, decode=8.8 * GB),
)}


def load_hardware(name_or_file: str | os.PathLike | dict) -> HardwareSpec:
    """A preset name (see :data:`PRESETS`), a JSON file in the profile shape, or such a dict."""
    if isinstance(name_or_file, dict):
        return HardwareSpec.from_dict(name_or_file)
    key = str(name_or_file)
    if key in PRESETS:
        return HardwareSpec.from_dict(PRESETS[key])
    p = Path(key).expanduser()
    if p.suffix == ".json" or p.exists():
        try:
            data = json.loads(p.read_text())
            return HardwareSpec.from_dict(data)
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such hardware file") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{p}: not a hardware profile ({exc!r})") from None
    raise LookupError(f"unknown hardware {key!r}: use a JSON profile file or one of {', '.join(PRESETS)}")

"""Shared pieces of the benchmarks: cgroup memory caps, dropping caches, llama-bench and
`hypura run` invocations, direct-I/O disk bandwidth, medians. Linux, run as root for caps."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_BENCH = ROOT / "build" / "llama.cpp" / "bin" / "llama-bench"


class Cgroup:
    """A cgroup at `self.path` that commands can be run inside, removed by `close`."""

    path: Path

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside this cgroup (the shell joins it, then execs the command)."""
        return ["sh", "-c", f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"', "sh", *argv]

    def close(self) -> None:
        for _ in range(50):   # the last process may still be leaving it
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


BLKIO = Path("/sys/fs/cgroup/blkio")


class ReadThrottle(Cgroup):
    """A cgroup-v1 blkio cgroup whose reads from the block device holding `path` are limited to `bps`
    (what a slower disk would give: direct and synchronous reads are throttled)."""

    def __init__(self, path: Path, bps: int) -> None:
        st = os.stat(path)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        self.bps = int(bps)
        self.path = BLKIO / f"hypura-bench-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        (self.path / "blkio.throttle.read_bps_device").write_text(f"{dev} {bps}\n")

    def join(self) -> None:
        """Move this whole process (every thread) into the throttle."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def leave(self) -> None:
        (BLKIO / "cgroup.procs").write_text(str(os.getpid()))


class MemoryCap(Cgroup):
    """A cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`) that commands can be run inside."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = int(limit_bytes)
        name = f"hypura-bench-{uuid.uuid4().hex[:8]}"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists():
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(self.limit))
            (self.path / "memory.swap.max").write_text("0") if (self.path / "memory.swap.max").exists() else None
            self.version = 2
        else:
            self.path = Path("/sys/fs/cgroup/memory") / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
            self.version = 1

    def peak(self) -> int | None:
        for f in ("memory.peak", "memory.max_usage_in_bytes"):
            p = self.path / f
            if p.exists():
                return int(p.read_text().split()[0])
        return None

    def oom_killed(self) -> bool:
        p = self.path / ("memory.events" if self.version == 2 else "memory.oom_control")
        text = p.read_text() if p.exists() else ""
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k in ("oom_kill",) and int(v or 0) > 0:
                return True
        return False


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"warning: could not drop caches ({exc}); cold runs are not cold", file=sys.stderr)


def run_llama_bench(model: Path, cap: MemoryCap | None, n: int, threads: int, extra: list[str],
                    timeout: float = 1800) -> dict:
    argv = [str(LLAMA_BENCH), "-m", str(model), "-p", "0", "-n", str(n), "-r", "1", "-t", str(threads),
            "-o", "json", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cap.wrap(argv) if cap else argv, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        killed = p.returncode in (-9, 137) or (cap is not None and cap.oom_killed())
        return {"ok": False, "tps": None, "wall_s": wall, "returncode": p.returncode,
                "error": "killed: out of memory under the cap" if killed else p.stderr.strip()[-400:]}
    return {"ok": True, "tps": float(json.loads(p.stdout)[0]["avg_ts"]), "wall_s": wall}


def tree_env(tree: Path) -> dict:
    """The environment that runs Hypura from another checkout `tree` (its packages' sources first on the path;
    its binding built there): for side-by-side runs of two versions of the code."""
    srcs = sorted(str(p) for p in (tree / "packages").glob("*/src"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(srcs)}


def run_hypura(model: Path, cap: MemoryCap | None, n: int, threads: int, extra: list[str],
               timeout: float = 1800, env: dict | None = None) -> dict:
    argv = [sys.executable, "-m", "hypura.main", "run", str(model), "--raw", "--temp", "0", "-n", str(n + 1),
            "--threads", str(threads), "--json", "-p", "The quick brown fox", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cap.wrap(argv) if cap else argv, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"ok": False, "tps": None, "wall_s": wall, "returncode": p.returncode, "error": p.stderr.strip()[-600:]}
    out = json.loads(p.stdout)
    out.pop("text", None)
    out.pop("tokens", None)
    return {"ok": True, "tps": out["eval_tps"], "wall_s": wall, **out}


def disk_bandwidth(path: Path, nbytes: int = 6 << 30, block: int = 16 << 20, threads: int = 16) -> float:
    """Sequential O_DIRECT read bandwidth of the file itself (bytes/s): the physical limit's numerator."""
    from hypura_streaming import DirectReader
    from hypura_streaming.loader import AlignedBuffer

    reader = DirectReader(path, threads=threads)
    size = min(nbytes, reader.size // block * block)
    bufs = [AlignedBuffer(block) for _ in range(threads)]
    t0 = time.perf_counter()
    futs = [reader.pool.submit(reader.read_into, bufs[i % threads].view, i * block) for i in range(size // block)]
    for f in futs:
        f.result()
    dt = time.perf_counter() - t0
    reader.close()
    for b in bufs:
        b.close()
    return size / dt


def median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

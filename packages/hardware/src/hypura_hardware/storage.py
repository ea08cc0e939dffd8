"""Read bandwidth of the storage that holds the models, measured with direct I/O.

A temporary file is written into the models directory (direct I/O where the filesystem allows it,
then fsync'd), and read back with ``O_DIRECT`` (Linux) or ``F_NOCACHE`` (macOS) so the page cache
never answers: large sequential reads and expert-sized random reads, each at several queue depths
(threads of ``os.preadv``, which releases the GIL). Buffers are page-aligned ``mmap`` regions.
Each pattern runs for ``seconds`` (at most a few passes over the file). The file
is removed afterwards. Where direct I/O is refused (tmpfs, some network filesystems) reads are
buffered after ``posix_fadvise(DONTNEED)``, and the result says ``direct_io: False``.
"""
from __future__ import annotations

import mmap
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
ALIGN = 4096
DEFAULT_FILE_BYTES = 256 * MiB
SEQ_BLOCK = 8 * MiB
RAND_BLOCKS = (1 * MiB, 4 * MiB)
QUEUE_DEPTHS = (1, 4, 16)
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")  # direct I/O there (Linux ≥ 6.6 tmpfs) still reads RAM


@dataclass(frozen=True)
class ReadPattern:
    """One measurement: ``kind`` "seq" or "rand", block size in bytes, queue depth (threads)."""

    kind: str
    block: int
    qd: int


def default_patterns() -> list[ReadPattern]:
    """8 MiB sequential and 1/4 MiB random reads, each at queue depths 1, 4 and 16."""
    patterns = [ReadPattern("seq", SEQ_BLOCK, qd) for qd in QUEUE_DEPTHS]
    patterns += [ReadPattern("rand", block, qd) for block in RAND_BLOCKS for qd in QUEUE_DEPTHS]
    return patterns


def open_direct(path: Path | str, flags: int = os.O_RDONLY) -> tuple[int, bool]:
    """Open ``path`` bypassing the page cache; returns (fd, whether direct I/O is on). Reads then need
    ``ALIGN``-aligned offsets, lengths and buffers. The descriptor is not inherited by child processes."""
    flags |= getattr(os, "O_CLOEXEC", 0)
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct), True
        except OSError:  # EINVAL: the filesystem does not support O_DIRECT
            pass
    fd = os.open(path, flags)
    if sys.platform == "darwin":
        import fcntl
        try:
            fcntl.fcntl(fd, fcntl.F_NOCACHE, 1)  # type: ignore[attr-defined]
            return fd, True
        except OSError:
            pass
    return fd, False


def filesystem_type(path: Path) -> str | None:
    """The filesystem type holding ``path`` ("ext4", "tmpfs" ...), from /proc/self/mounts; None elsewhere."""
    best, fstype = "", None
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(Path(path).resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, fields[2]
    return fstype


def _drop_cache(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def write_test_file(directory: Path, size: int, block: int = SEQ_BLOCK) -> Path:
    """Write ``size`` bytes of incompressible data into a new file in ``directory``, fsync'd."""
    fd_tmp, name = tempfile.mkstemp(prefix=".hypura-iotest-", dir=directory)
    os.close(fd_tmp)
    path = Path(name)
    try:
        fd, _ = open_direct(path, os.O_WRONLY)
        try:
            buf = mmap.mmap(-1, block)
            buf.write(os.urandom(block))
            view = memoryview(buf)
            written = 0
            while written < size:
                n = min(block, size - written)
                written += os.pwritev(fd, [view[:n]], written)
            os.fsync(fd)
            _drop_cache(fd)
            view.release()
            buf.close()
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def measure_pattern(path: Path, pattern: ReadPattern, seconds: float = 0.5, max_passes: int = 4,
                    seed: int = 0) -> dict:
    """Read ``path`` with one pattern for ``seconds`` (at most ``max_passes`` over the file).

    Returns the pattern's fields, ``bytes``, ``seconds``, ``bps`` and ``direct_io``.
    """
    size = os.path.getsize(path) // pattern.block * pattern.block
    if size == 0:
        raise ValueError(f"{path} is smaller than one {pattern.block}-byte block")
    n_blocks = size // pattern.block
    if pattern.kind == "seq":
        offsets = [i * pattern.block for i in range(n_blocks)]
    elif pattern.kind == "rand":
        offsets = [i * pattern.block for i in range(n_blocks)]
        random.Random(seed).shuffle(offsets)
    else:
        raise ValueError(f"unknown read pattern {pattern.kind!r}")
    fd, direct = open_direct(path)
    if not direct:
        _drop_cache(fd)
    lock = threading.Lock()
    state = {"next": 0, "bytes": 0}
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        buf = mmap.mmap(-1, pattern.block)  # page-aligned, as O_DIRECT requires
        view = memoryview(buf)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = state["next"]
                    if i >= n_blocks * max_passes:
                        return
                    state["next"] = i + 1
                offset = offsets[i % n_blocks]
                n = os.preadv(fd, [view], offset)
                if n <= 0:
                    raise OSError(f"short read at offset {offset} of {path}")
                with lock:
                    state["bytes"] += n
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        finally:
            view.release()
            buf.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(pattern.qd)]
    start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        elapsed = time.perf_counter() - start
        os.close(fd)
    if errors:
        raise errors[0]
    return {"kind": pattern.kind, "block": pattern.block, "qd": pattern.qd, "bytes": state["bytes"],
            "seconds": elapsed, "bps": state["bytes"] / elapsed if elapsed > 0 else 0.0,
            "direct_io": direct}


def measure_storage(directory: Path | str, file_bytes: int = DEFAULT_FILE_BYTES,
                    patterns: Iterable[ReadPattern] | None = None, seconds: float = 0.5,
                    step: Callable[[str], None] | None = None) -> dict:
    """Measure read bandwidth of the filesystem holding ``directory``.

    Returns ``seq_read_bps`` (best 8 MiB sequential), ``rand_read_bps`` (best random read of the
    smallest block, 1 MiB by default: the conservative expert size), ``direct_io``, ``path``,
    ``file_bytes``, ``fstype``, ``memory_backed`` (tmpfs: the numbers are RAM's) and ``reads``,
    the per-pattern table. ``step(label)`` is called before each phase.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    patterns = list(patterns) if patterns is not None else default_patterns()
    file_bytes = max(ALIGN, file_bytes // ALIGN * ALIGN)
    if step:
        step(f"writing {file_bytes // MiB} MiB test file")
    path = write_test_file(directory, file_bytes)
    reads: list[dict] = []
    try:
        for pattern in patterns:
            if step:
                step(f"disk {pattern.kind} {pattern.block // 1024} KiB qd{pattern.qd}")
            reads.append(measure_pattern(path, pattern, seconds))
    finally:
        path.unlink(missing_ok=True)
    seq = [r["bps"] for r in reads if r["kind"] == "seq"]
    rand_block = min((r["block"] for r in reads if r["kind"] == "rand"), default=None)
    rand = [r["bps"] for r in reads if r["kind"] == "rand" and r["block"] == rand_block]
    fstype = filesystem_type(directory)
    return {"path": str(directory), "file_bytes": file_bytes, "fstype": fstype,
            "memory_backed": fstype in MEMORY_FILESYSTEMS,
            "direct_io": all(r["direct_io"] for r in reads) if reads else False,
            "seq_read_bps": max(seq) if seq else None, "rand_read_bps": max(rand) if rand else None,
            "reads": reads}

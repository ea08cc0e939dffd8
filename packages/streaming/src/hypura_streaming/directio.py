"""Direct, aligned, concurrent reads from a model file that is opened read-only.

O_DIRECT on Linux (F_NOCACHE on macOS), opened by `hypura_hardware.storage.open_direct`, keeps
streamed weights out of the page cache. Direct I/O
needs 4096-byte aligned offsets, lengths and buffers: callers read the aligned superset of what
they need into aligned memory and point into it (see `aligned_span`). Reads run on a thread pool
of `os.preadv` calls, which release the GIL; large reads are split into chunks so many are in
flight. The file's identity (device, inode, size, mtime) is checked so that a model file that
changes or vanishes during a run is an error, never silently different weights.

A split GGUF set is one reader over all its shards (one descriptor each, every shard's identity checked):
offsets are *model offsets*, `shard_offset(i, offset)` — shard i's file offset with i in the bits from
`SHARD_SHIFT` up — so layouts never coalesce bytes of two shards and callers need not know about shards.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

from hypura_hardware.storage import ALIGN, open_direct

log = logging.getLogger(__name__)
CHUNK = 16 << 20  # 16 MiB reads, 16 in flight: what this kind of NVMe needs to reach its limit
SHARD_SHIFT = 44  # a shard's file may hold up to 16 TiB


class StreamError(OSError):
    """The model file could not be read as planned (changed, truncated, vanished, I/O error)."""


def align_down(x: int, a: int = ALIGN) -> int:
    return x - x % a


def align_up(x: int, a: int = ALIGN) -> int:
    return -(-x // a) * a


def shard_offset(shard: int, offset: int) -> int:
    """The model offset of `offset` in shard `shard` (0: the first shard, or the only file)."""
    return (shard << SHARD_SHIFT) + offset


def aligned_span(offset: int, size: int) -> tuple[int, int]:
    """(aligned start, aligned length) covering [offset, offset + size)."""
    start = align_down(offset)
    return start, align_up(offset + size) - start


class BusyClock:
    """Wall time during which at least one read was in flight (for honest GB/s)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight = 0
        self._since = 0.0
        self.busy_s = 0.0

    def enter(self) -> None:
        with self._lock:
            if self._inflight == 0:
                self._since = time.perf_counter()
            self._inflight += 1

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                self.busy_s += time.perf_counter() - self._since


class DirectReader:
    """A read-only handle on a model file (or every shard of a split set, `shards` in order, the first
    being `path`) with a pool of reader threads."""

    def __init__(self, path: str | os.PathLike, threads: int = 16, direct: bool = True,
                 shards: Sequence[str | os.PathLike] | None = None) -> None:
        self.path = os.fspath(path)
        self.paths = [os.fspath(p) for p in shards] if shards else [self.path]
        self.fds: list[int] = []
        self._identity: list[tuple] = []
        self.sizes: list[int] = []
        self.direct = direct
        try:
            for p in self.paths:
                if direct:
                    fd, ok = open_direct(p)
                    if not ok:  # e.g. tmpfs does not support O_DIRECT
                        log.warning("%s: direct I/O unavailable; reading through the page cache", p)
                    self.direct = self.direct and ok
                else:
                    fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                self.fds.append(fd)
                st = os.fstat(fd)
                self._identity.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
                self.sizes.append(st.st_size)
        except BaseException:
            for fd in self.fds:
                os.close(fd)
            raise
        self.fd = self.fds[0]
        self.size = self.sizes[0]
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hypura-io")
        self.clock = BusyClock()
        self.bytes_read = 0
        self.n_reads = 0
        self._count_lock = threading.Lock()

    def add_file(self, path: str | os.PathLike) -> int:
        """Open one more read-only file (e.g. a derived file beside the model's shards); returns the offset
        base of its bytes (`shard_offset(index, 0)`). It is checked by `check_unchanged` like the others."""
        p = os.fspath(path)
        fd, ok = open_direct(p) if self.direct else (os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), False)
        if self.direct and not ok:
            os.close(fd)
            raise StreamError(f"{p}: direct I/O unavailable for it (the model's reads are direct)")
        st = os.fstat(fd)
        self.paths.append(p)
        self.fds.append(fd)
        self._identity.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        self.sizes.append(st.st_size)
        return shard_offset(len(self.fds) - 1, 0)

    def check_unchanged(self) -> None:
        """Raise StreamError if a path no longer names the file that was opened, unchanged."""
        for p, ident in zip(self.paths, self._identity):
            try:
                st = os.stat(p)
            except OSError as exc:
                raise StreamError(f"{p}: the model file vanished during the run ({exc.strerror})") from None
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != ident:
                raise StreamError(f"{p}: the model file changed during the run")

    def read_into(self, dest: memoryview, offset: int) -> None:
        """Read len(dest) bytes at model offset `offset` into dest (aligned when direct), synchronously."""
        shard, offset = offset >> SHARD_SHIFT, offset & ((1 << SHARD_SHIFT) - 1)
        if shard >= len(self.fds):
            raise StreamError(f"{self.path}: read at offset {offset} of shard {shard + 1}, the model has "
                              f"{len(self.fds)} file(s)")
        fd, size, path = self.fds[shard], self.sizes[shard], self.paths[shard]
        want = len(dest)
        done = 0
        self.clock.enter()
        try:
            while done < want:
                try:
                    n = os.preadv(fd, [dest[done:]], offset + done)
                except OSError as exc:
                    raise StreamError(f"{path}: read of {want} bytes at {offset} failed: {exc.strerror}") from None
                if n <= 0:
                    if offset + done >= size and offset + want > size:
                        # the aligned superset may run past the end of the file: zero the tail
                        dest[done:] = bytes(want - done)
                        break
                    raise StreamError(f"{path}: file truncated during the run (short read at {offset + done})")
                done += n
        finally:
            self.clock.leave()
        with self._count_lock:
            self.bytes_read += min(done, want)
            self.n_reads += 1

    def submit(self, dest: memoryview, offset: int, chunk: int = CHUNK) -> list[Future]:
        """Read dest from offset on the pool, split into chunks; returns their futures."""
        return [self.pool.submit(self.read_into, dest[pos:pos + chunk], offset + pos)
                for pos in range(0, len(dest), chunk)]

    @property
    def gbps(self) -> float:
        return self.bytes_read / self.clock.busy_s / 1e9 if self.clock.busy_s else 0.0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.fd = -1

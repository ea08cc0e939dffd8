"""Streamed weights in the CPU's repacked layout, converted once into a file of their own.

On the CPU, llama.cpp's default load keeps Q4_0 / Q4_K / IQ4_NL matmul weights repacked (CPU_REPACK), and
the resident reference computes with them, so streaming must give its slots the same layout: without
this file every read is converted as it lands (`ggml_backend_tensor_set`: experts on a one-expert view,
memory.py; dense layers in place, pool.py), about 0.36 ms of a core per 0.9 MB matrix on the 2-core box,
taken from the compute threads. Here each streamed block — one expert of one kind, or one dense layer's
slot image — is converted once, by the same calls, and stored page-aligned; a read is then one O_DIRECT
read straight into its slot: no staging, no copy, no conversion.

Built on first use (tqdm bar), written under a temporary name and renamed when whole, reused while its
manifest matches: the model files' names, sizes and mtimes, what the blocks are (each repacked tensor's
layer, kind, type, bytes and file parts), the buffer type, the CPU features llama.cpp reports and the
binding build. The model
file is only read. Skipped, with the reason in the streamer's stats, when the directory's filesystem
would keep less than max(5%, 4 GiB) free (`$HYPURA_REPACKED_KEEP_FREE` bytes if set), or it cannot be
written; the streamer then converts as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING, Callable

from .directio import ALIGN, align_up
from .loader import AlignedBuffer

if TYPE_CHECKING:
    from .experts.layout import ExpertLayout

log = logging.getLogger(__name__)
FORMAT = 1
MAGIC = b"HYPURA-REPACKED\n"
HEADER = 1 << 16          # the manifest's room; the experts start here
BATCH = 16                # experts converted per write
KEEP_FREE_ENV = "HYPURA_REPACKED_KEEP_FREE"   # bytes the disk must keep free (default max(5%, 4 GiB))
Key = tuple[int, str]


@dataclass(frozen=True)
class Block:
    """`count` items of `nbytes` each (stored `align_up(nbytes)` apart), named `key` by the streamer."""
    key: object
    count: int
    nbytes: int

    @property
    def stride(self) -> int:
        return align_up(self.nbytes)


@dataclass(frozen=True)
class RepackedFile:
    """An open repacked file: `base` is the reader offset of its byte 0."""
    path: Path
    base: int
    blocks: dict                           # block key -> (file offset of item 0, bytes between items)
    nbytes: int
    built_s: float | None                  # None: reused

    def where(self, key, index: int) -> tuple[int, int]:
        """(reader offset, whole-page length) of item `index` of block `key`."""
        start, stride = self.blocks[key]
        return self.base + start + index * stride, stride

    def report(self) -> dict:
        return {"path": str(self.path), "bytes": self.nbytes,
                "built_s": round(self.built_s, 2) if self.built_s is not None else None}


# produce(block, first, count, out): the repacked bytes of items first..first+count-1, at block.stride apart
Producer = Callable[[Block, int, int, memoryview], None]


def build_identity() -> dict:
    """What the repacked layout depends on besides the file: the CPU features and the binding build."""
    from hypura_llama import _native, system_info

    st = os.stat(_native.__file__)
    return {"system_info": system_info(), "binding": [os.path.basename(_native.__file__), st.st_size, st.st_mtime_ns]}


def file_manifest(model_paths: list[str], what: object, buft_name: str) -> dict:
    files = []
    for p in model_paths:
        st = os.stat(p)
        files.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return {"format": FORMAT, "files": files, "buffer_type": buft_name, "blocks": what, **build_identity()}


def _offsets(blocks: list[Block]) -> tuple[dict, int]:
    out, at = {}, HEADER
    for b in blocks:
        out[b.key] = (at, b.stride)
        at += b.stride * b.count
    return out, at


def file_for(directory: Path, model_path: str, man: dict, suffix: str) -> Path:
    digest = hashlib.sha256(json.dumps(man, sort_keys=True).encode()).hexdigest()
    where = hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()[:8]
    return directory / f"{Path(model_path).stem}-{where}-{digest[:16]}.{suffix}"


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
        if not head.startswith(MAGIC):
            return None
        n = int.from_bytes(head[len(MAGIC):len(MAGIC) + 8], "little")
        return json.loads(head[len(MAGIC) + 8:len(MAGIC) + 8 + n])
    except (OSError, ValueError):
        return None


def open_or_build(directory: Path, model_paths: list[str], man: dict, blocks: list[Block], produce: Producer,
                  reader, batch: int, suffix: str) -> tuple[RepackedFile | None, str]:
    """The repacked file of `blocks` in `directory`, built by `produce` (`batch` items at a time) if missing or
    stale, opened in `reader`; or (None, why not)."""
    path = file_for(directory, model_paths[0], man, suffix)
    offsets, size = _offsets(blocks)
    if path.exists() and _read_manifest(path) == man and path.stat().st_size == size:
        return RepackedFile(path, reader.add_file(path), offsets, size, None), ""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(directory)
    except OSError as exc:
        return None, f"cannot use {directory}: {exc.strerror}"
    keep = int(os.environ.get(KEEP_FREE_ENV) or max(usage.total // 20, 4 << 30))
    if usage.free - size < keep:
        return None, (f"not built: {size / 1e9:.1f} GB in {directory} would leave {(usage.free - size) / 1e9:.1f} GB "
                      f"free (keeps {keep / 1e9:.1f} GB)")
    t0 = time.perf_counter()
    try:
        _write(path, man, blocks, offsets, size, produce, batch)
    except OSError as exc:
        return None, f"not built in {directory}: {exc.strerror}"
    for old in directory.glob(path.name.rsplit("-", 1)[0] + f"-*.{suffix}"):
        if old != path:   # the same model's stale versions
            old.unlink(missing_ok=True)
    return RepackedFile(path, reader.add_file(path), offsets, size, time.perf_counter() - t0), ""


def _write(path: Path, man: dict, blocks: list[Block], offsets: dict, size: int, produce: Producer,
           batch: int) -> None:
    from tqdm import tqdm

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        fd = os.open(tmp, flags, 0o644)
    out = AlignedBuffer(max(1, batch) * max(b.stride for b in blocks))
    header = AlignedBuffer(HEADER)
    try:
        head = json.dumps(man, sort_keys=True).encode()
        if len(head) + len(MAGIC) + 8 > HEADER:
            raise OSError(0, "manifest too large")
        header.view[:len(MAGIC) + 8 + len(head)] = MAGIC + len(head).to_bytes(8, "little") + head
        with tqdm(total=size - HEADER, unit="B", unit_scale=True, desc="repacking weights", leave=False) as bar:
            for b in blocks:
                start, stride = offsets[b.key]
                for first in range(0, b.count, batch):
                    n = min(batch, b.count - first)
                    with out.view[:n * stride] as view:
                        view[:] = bytes(len(view))
                        produce(b, first, n, view)
                        _pwrite(fd, view, start + first * stride)
                    bar.update(n * stride)
        _pwrite(fd, header.view, 0)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    finally:
        out.close()
        header.close()
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        with view[done:] as rest:
            done += os.pwrite(fd, rest, offset + done)


# -- the experts' file ----------------------------------------------------------------------
def open_experts_file(directory: Path, model_paths: list[str], layout: "ExpertLayout", memory, reads,
                      reader) -> tuple[RepackedFile | None, str]:
    """The repacked file of `layout`'s repacked experts (blocks keyed (layer, kind), one item per expert).
    Building converts through `reads` into cache slots 0.. (call it before the cache holds anything)."""
    keys = sorted(layout.repacked)
    what = {"n_expert": layout.n_expert,
            "tensors": [[layer, kind, int(memory.tensors[(layer, kind)].type), layout.nbytes[(layer, kind)],
                         [list(x) for x in layout.parts[(layer, kind)]]] for layer, kind in keys]}
    man = file_manifest(model_paths, what, memory.repack_buft_name)
    blocks = [Block(key, layout.n_expert, layout.nbytes[key]) for key in keys]

    def produce(b: Block, first: int, n: int, out: memoryview) -> None:
        layer, kind = b.key
        reads.finish([reads.submit(layer, kind, first + i, i) for i in range(n)])   # read + convert into slot i
        for i in range(n):
            src = memory.region_offset(memory.slot_ptr(layer, kind, i))
            out[i * b.stride:i * b.stride + b.nbytes] = memory.region_view(src, b.nbytes)

    return open_or_build(directory, model_paths, man, blocks, produce, reader, min(BATCH, layout.n_slots), "experts")


# -- the dense layers' file -----------------------------------------------------------------
def open_dense_file(directory: Path, model_paths: list[str], streamer, indices: list[int],
                    buft_name: str) -> tuple[RepackedFile | None, str]:
    """The repacked file of a DenseStreamer's streamed layers `indices` (blocks keyed by the index, one item:
    the layer's slot image, its repacked tensors converted in place). Building fills and converts each layer
    in its own slot (call it before the first pass)."""
    what = {"slot_size": streamer.pool.slot_size,
            "layers": [[streamer.layers[k], [[t.name, t.size, t.offset] for t in
                                             streamer.layouts[k].tensors]] for k in indices]}
    man = file_manifest(model_paths, what, buft_name)
    blocks = [Block(k, 1, streamer.layouts[k].size) for k in indices]

    def produce(b: Block, first: int, n: int, out: memoryview) -> None:
        image = streamer.fill_now(b.key)
        out[:b.nbytes] = image[:b.nbytes]

    return open_or_build(directory, model_paths, man, blocks, produce, streamer.reader, 1, "dense")

"""The streamed experts in the CPU's repacked layout, converted once into a file of their own.

On the CPU, llama.cpp's default load keeps Q4_0 / Q4_K / IQ4_NL matmul weights repacked (CPU_REPACK), and
the resident reference computes with them, so expert streaming must give its slots the same layout:
without this file every read expert is converted as it lands (`ggml_backend_tensor_set` on a one-expert
view, memory.py), about 0.36 ms of a core per 0.9 MB matrix on the 2-core box, taken from the compute
threads. Here every streamed expert is converted once, by the same call, and stored page-aligned; a miss
is then one O_DIRECT read straight into its slot: no staging, no copy, no conversion.

Built on first use (tqdm bar), written under a temporary name and renamed when whole, reused while its
manifest matches: the model files' names, sizes and mtimes, each repacked tensor's layer, kind, type,
bytes and file parts, the buffer type, the CPU features llama.cpp reports and the binding build. The model
file is only read. Skipped, with the reason in the streamer's stats, when the directory's filesystem
would keep less than max(10%, 4 GiB) free, or it cannot be written; the streamer then converts as before.
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

from ..directio import ALIGN, align_up
from ..loader import AlignedBuffer
from .layout import ExpertLayout

log = logging.getLogger(__name__)
FORMAT = 1
MAGIC = b"HYPURA-REPACKED\n"
HEADER = 1 << 16          # the manifest's room; the experts start here
BATCH = 16                # experts converted per write
Key = tuple[int, str]


@dataclass(frozen=True)
class RepackedFile:
    """An open repacked-experts file: `base` is the reader offset of its byte 0."""
    path: Path
    base: int
    blocks: dict[Key, tuple[int, int]]     # (layer, kind) -> (file offset of expert 0, bytes between experts)
    nbytes: int
    built_s: float | None                  # None: reused

    def where(self, key: Key, expert: int) -> tuple[int, int]:
        """(reader offset, whole-page length) of one repacked expert of `key`."""
        start, stride = self.blocks[key]
        return self.base + start + expert * stride, stride

    def report(self) -> dict:
        return {"path": str(self.path), "bytes": self.nbytes,
                "built_s": round(self.built_s, 2) if self.built_s is not None else None}


def build_identity() -> dict:
    """What the repacked layout depends on besides the file: the CPU features and the binding build."""
    from hypura_llama import _native, system_info

    st = os.stat(_native.__file__)
    return {"system_info": system_info(), "binding": [os.path.basename(_native.__file__), st.st_size, st.st_mtime_ns]}


def manifest(model_paths: list[str], layout: ExpertLayout, types: dict[Key, int], buft_name: str) -> dict:
    files = []
    for p in model_paths:
        st = os.stat(p)
        files.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    keys = [[layer, kind, types[(layer, kind)], layout.nbytes[(layer, kind)], [list(x) for x in layout.parts[(layer, kind)]]]
            for layer, kind in sorted(layout.repacked)]
    return {"format": FORMAT, "files": files, "n_expert": layout.n_expert, "buffer_type": buft_name,
            "tensors": keys, **build_identity()}


def _blocks(layout: ExpertLayout) -> tuple[dict[Key, tuple[int, int]], int]:
    blocks, at = {}, HEADER
    for key in sorted(layout.repacked):
        stride = align_up(layout.nbytes[key])
        blocks[key] = (at, stride)
        at += stride * layout.n_expert
    return blocks, at


def file_for(directory: Path, model_path: str, man: dict) -> Path:
    digest = hashlib.sha256(json.dumps(man, sort_keys=True).encode()).hexdigest()
    where = hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()[:8]
    return directory / f"{Path(model_path).stem}-{where}-{digest[:16]}.repacked"


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


def open_or_build(directory: Path, model_paths: list[str], layout: ExpertLayout, memory, reads,
                  reader) -> tuple[RepackedFile | None, str]:
    """The repacked file for `layout`'s repacked experts in `directory`, built if missing or stale, opened in
    `reader`; or (None, why not). Building converts through `reads` into cache slots 0.. (call it before the
    cache holds anything)."""
    types = {key: int(memory.tensors[key].type) for key in layout.repacked}
    man = manifest(model_paths, layout, types, memory.repack_buft_name)
    path = file_for(directory, model_paths[0], man)
    blocks, size = _blocks(layout)
    if path.exists() and _read_manifest(path) == man and path.stat().st_size == size:
        return RepackedFile(path, reader.add_file(path), blocks, size, None), ""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(directory)
    except OSError as exc:
        return None, f"cannot use {directory}: {exc.strerror}"
    keep = max(usage.total // 10, 4 << 30)
    if usage.free - size < keep:
        return None, (f"not built: {size / 1e9:.1f} GB in {directory} would leave {(usage.free - size) / 1e9:.1f} GB "
                      f"free (keeps {keep / 1e9:.1f} GB)")
    t0 = time.perf_counter()
    try:
        _write(path, man, blocks, size, layout, memory, reads)
    except OSError as exc:
        return None, f"not built in {directory}: {exc.strerror}"
    for old in directory.glob(path.name.rsplit("-", 1)[0] + "-*.repacked"):
        if old != path:   # the same model's stale versions
            old.unlink(missing_ok=True)
    return RepackedFile(path, reader.add_file(path), blocks, size, time.perf_counter() - t0), ""


def _write(path: Path, man: dict, blocks: dict, size: int, layout: ExpertLayout, memory, reads) -> None:
    from tqdm import tqdm

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        fd = os.open(tmp, flags, 0o644)
    n_batch = max(1, min(BATCH, layout.n_slots))
    out = AlignedBuffer(n_batch * max(stride for _, stride in blocks.values()))
    try:
        head = json.dumps(man, sort_keys=True).encode()
        if len(head) + len(MAGIC) + 8 > HEADER:
            raise OSError(0, "manifest too large")
        header = AlignedBuffer(HEADER)
        header.view[:len(MAGIC) + 8 + len(head)] = MAGIC + len(head).to_bytes(8, "little") + head
        with tqdm(total=size - HEADER, unit="B", unit_scale=True, desc="repacking experts", leave=False) as bar:
            for (layer, kind), (start, stride) in sorted(blocks.items(), key=lambda kv: kv[1][0]):
                nb = layout.nbytes[(layer, kind)]
                for e0 in range(0, layout.n_expert, n_batch):
                    es = range(e0, min(layout.n_expert, e0 + n_batch))
                    futs = [reads.submit(layer, kind, e, i) for i, e in enumerate(es)]   # read + convert into slot i
                    reads.finish(futs)
                    for i in range(len(es)):
                        at = i * stride
                        out.view[at:at + nb] = memory.region_view(memory.region_offset(
                            memory.slot_ptr(layer, kind, i)), nb)
                        out.view[at + nb:at + stride] = bytes(stride - nb)
                    _pwrite(fd, out.view[:len(es) * stride], start + e0 * stride)
                    bar.update(len(es) * stride)
        _pwrite(fd, header.view, 0)
        header.close()
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    finally:
        out.close()
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)

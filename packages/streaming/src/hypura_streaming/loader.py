"""Load a model whose weight contents Hypura owns: `llama_model_init_from_user`.

llama.cpp allocates every tensor (on the devices the parameters say) and hands each to our
callback: resident tensors are filled here with direct reads from the GGUF, streamed tensors are
left untouched (their allocation is never committed) and later re-pointed into a slot pool.
Tensors that llama.cpp creates but the file lacks (optional biases, scales, rope factors) get
neutral values, so they change nothing. The model file is opened read-only.

Where the CPU computes, every weight llama.cpp's default load would repack (`repack.py`) is put in that
buffer type by `tensor_buft_overrides`, and filled through `ggml_backend_tensor_set` (which converts), so the
resident part of a streaming run computes exactly as `--mode resident` does. A split GGUF set is one model:
the metadata context holds every shard's tensors, and each tensor is read from its shard.
"""
from __future__ import annotations

import logging
import mmap
import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from hypura_llama import BufferType, LlamaModel, ModelParams, ensure_init, ffi, lib, load_from_user
from hypura_placement import GGUFError, RawTensor, read_header

from .directio import SHARD_SHIFT, DirectReader, StreamError, aligned_span, shard_offset
from .repack import cpu_computes, repack_decisions, repack_overrides

log = logging.getLogger(__name__)
_NEUTRAL_ONE = re.compile(r"(rope_freqs|rope_factors_(long|short)|(^|[._])scale)(\.weight)?$|_scale\.weight$")
_NEUTRAL_ZERO = re.compile(r"(\.bias|_b)$|bias$")


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's bytes are in the file (placement's `TensorInfo` is the planner's view of a tensor)."""
    name: str
    offset: int   # model offset of the data (`directio.shard_offset`: the file offset for one file; of the
    size: int     # first part when composed); bytes
    # composed expert tensors: per part (file offset of the source tensor, bytes of one expert)
    parts: tuple[tuple[int, int], ...] = ()


# Tensors llama.cpp creates as duplicates of another when the file lacks them (tied embeddings).
TIED = {"output.weight": "token_embd.weight"}
# `init_from_user` also creates the optional fused [n_embd, 2*n_ff, n_expert] gate_up expert tensor,
# and then never the separate ones: it is composed from the file's gate and up experts (expert e =
# gate_e rows then up_e rows, the layout llama.cpp's fused path views), bytes only, no arithmetic.
_GATE_EXPS = re.compile(r"^blk\.(\d+)\.ffn_gate_exps\.weight$")


class GGUFIndex:
    """Where each tensor's bytes are, and the gguf metadata context `init_from_user` builds the model from.

    Names, types, shapes and offsets come from `hypura_placement.read_header` (the one GGUF reader);
    the native part is only the gguf context (gguf's C reader, metadata only) that llama.cpp needs.
    For tied tensors the file lacks (output.weight = token_embd.weight), an entry with the
    source's type and shape is added to the in-memory metadata, so llama.cpp creates it with the
    right type, and it is read from the source's bytes. For a split set (`path` its first shard) the
    context is the first shard's with every other shard's tensors added (`init_from_user` takes the
    types of the tensors it creates from it, and reads no files), and each location is in its shard
    (`files`, in order). No file is ever written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            header = read_header(self.path)
        except GGUFError as exc:
            raise StreamError(f"{self.path}: not a readable GGUF file ({exc})") from None
        self.files = [os.fspath(f.path) for f in header.files]
        shard_of = {f: i for i, f in enumerate(self.files)}
        shard = {t.name: shard_of[os.fspath(t.path or self.files[0])] for t in header.tensors}
        arch = header.kv.get("general.architecture", "")
        self.n_expert_used = int(header.kv.get(f"{arch}.expert_used_count", 0) or 0)
        self._raw: dict[str, RawTensor] = {t.name: t for t in header.tensors}
        self.tensors: dict[str, TensorLocation] = {
            t.name: TensorLocation(t.name, shard_offset(shard[t.name], t.offset), t.nbytes)
            for t in header.tensors}
        self._other_shards = [t for t in header.tensors if shard[t.name] > 0]
        ensure_init()
        params = ffi.new("struct gguf_init_params *")
        params.no_alloc = True
        params.ctx = ffi.NULL         # the tensor table is in the gguf context itself: no ggml context
        self.ctx = lib.gguf_init_from_file(self.path.encode(), params[0])
        if self.ctx == ffi.NULL:
            raise StreamError(f"{self.path}: not a readable GGUF file")
        self._extra_ctx = ffi.NULL
        self._add_tied()

    def _new_tensor(self, name: str, ggml_type: int, shape: tuple[int, ...]) -> None:
        t = lib.ggml_new_tensor(self._extra_ctx, ggml_type, len(shape), ffi.new("int64_t[]", list(shape)))
        lib.ggml_set_name(t, name.encode())
        lib.gguf_add_tensor(self.ctx, t)

    @property
    def raw(self) -> list[RawTensor]:
        """Every tensor llama.cpp will create from the file: name, type, shape (tied/composed ones included)."""
        return list(self._raw.values())

    def _add_tied(self) -> None:
        missing = [(dst, src) for dst, src in TIED.items() if dst not in self.tensors and src in self.tensors]
        fused = []
        for name in list(self.tensors):
            m = _GATE_EXPS.match(name)
            if m:
                gate_up, up = f"blk.{m.group(1)}.ffn_gate_up_exps.weight", f"blk.{m.group(1)}.ffn_up_exps.weight"
                if gate_up not in self.tensors and up in self.tensors:
                    fused.append((gate_up, name, up))
        if not missing and not fused and not self._other_shards:
            return
        p = ffi.new("struct ggml_init_params *")
        p.mem_size = lib.ggml_tensor_overhead() * (len(missing) + len(fused) + len(self._other_shards) + 1)
        p.no_alloc = True
        self._extra_ctx = lib.ggml_init(p[0])
        for t in self._other_shards:   # the first shard's context lacks them
            self._new_tensor(t.name, t.ggml_type, t.shape)
        for dst, src in missing:
            st = self._raw[src]
            self._new_tensor(dst, st.ggml_type, st.shape)
            self._raw[dst] = replace(st, name=dst)
            self.tensors[dst] = TensorLocation(dst, self.tensors[src].offset, self.tensors[src].size)
        for dst, gate, up in fused:
            g, u = self._raw[gate], self._raw[up]
            if g.ggml_type != u.ggml_type or g.shape != u.shape or len(g.shape) != 3:
                raise StreamError(f"{self.path}: {gate} and {up} differ in type or shape")
            self._new_tensor(dst, g.ggml_type, (g.shape[0], 2 * g.shape[1], g.shape[2]))
            self._raw[dst] = replace(g, name=dst, shape=(g.shape[0], 2 * g.shape[1], g.shape[2]), nbytes=g.nbytes * 2)
            gi, ui = self.tensors[gate], self.tensors[up]
            n_exp = g.shape[2]
            self.tensors[dst] = TensorLocation(dst, gi.offset, gi.size + ui.size,
                                               ((gi.offset, gi.size // n_exp), (ui.offset, ui.size // n_exp)))

    def close(self) -> None:
        if self.ctx is not None and self.ctx != ffi.NULL:
            lib.gguf_free(self.ctx)
            if self._extra_ctx != ffi.NULL:
                lib.ggml_free(self._extra_ctx)
        self.ctx = None


class AlignedBuffer:
    """Page-aligned anonymous memory (mmap), usable as an O_DIRECT destination."""

    def __init__(self, size: int) -> None:
        self.size = max(int(size), mmap.PAGESIZE)
        self.mem = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.mem)
        self.ptr = ffi.from_buffer(self.view)

    def close(self) -> None:
        self.ptr = None
        self.view.release()
        self.mem.close()


class FileMap:
    """Tensors computed straight from the model file through read-only memory maps: the token embedding on the CPU,
    of which a token reads one row (`get_rows`), so the rows used live in the page cache (reclaimable) and the
    rest of the matrix costs no memory. Close it after the model that points into it."""

    def __init__(self, reader: DirectReader) -> None:
        self.reader = reader
        self._maps: list[mmap.mmap] = []
        self._ptrs: list = []
        self.names: list[str] = []
        self.nbytes = 0

    def point(self, tensor, name: str, offset: int, size: int) -> None:
        """Point `tensor` at its `size` bytes at model offset `offset`, mapped read-only."""
        shard, at = offset >> SHARD_SHIFT, offset & ((1 << SHARD_SHIFT) - 1)
        start = at - at % mmap.ALLOCATIONGRANULARITY
        with open(self.reader.paths[shard], "rb") as f:
            mm = mmap.mmap(f.fileno(), at - start + size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED, offset=start)
        ptr = ffi.from_buffer(mm)
        self._maps.append(mm)
        self._ptrs.append(ptr)
        tensor.data = ffi.cast("char *", ptr) + (at - start)
        self.names.append(name)
        self.nbytes += size

    def close(self) -> None:
        self._ptrs.clear()
        for mm in self._maps:
            mm.close()
        self._maps.clear()


class OwnedLoad:
    """One `init_from_user` load (`hypura_llama.load_from_user`, which calls `on_tensor` per tensor).
    `is_streamed(name)` says which tensors to leave unread; their ggml_tensor pointers are collected
    in `streamed` by name. `repack` (default: where the CPU computes) loads every resident weight that
    llama.cpp's default load repacks into that buffer type; `repack_buffer_type(name)` says which, for
    streamed tensors too (a streamer must then fill them through storage of that type)."""

    def __init__(self, path: str | os.PathLike, reader: DirectReader, is_streamed: Callable[[str], bool],
                 repack: bool | None = None, mapped: Iterable[str] = (), file_map: FileMap | None = None) -> None:
        self.path = os.fspath(path)
        self.mapped = frozenset(mapped)           # names computed from `file_map` (see FileMap), never read
        self.file_map = file_map
        self._to_map: list[tuple[object, TensorLocation]] = []
        self.reader = reader
        self.index = GGUFIndex(path)
        self.is_streamed = is_streamed
        self.repack = cpu_computes() if repack is None else bool(repack)
        self.repack_bufts: dict[str, BufferType] = (
            repack_decisions(self.index.raw, max(1, self.index.n_expert_used)) if self.repack else {})
        self.streamed: dict[str, object] = {}
        self.resident: dict[str, object] = {}     # name -> llama.cpp's tensor, for every tensor read now
        self.neutral: list[str] = []
        self.neutral_tensors: dict[str, tuple[object, float]] = {}   # name -> (tensor, value)
        self.bytes_loaded = 0
        self._staging: AlignedBuffer | None = None
        self._progress = None

    def repack_buffer_type(self, name: str) -> BufferType | None:
        """The buffer type llama.cpp's default load gives tensor `name` on this machine (None: plain)."""
        return self.repack_bufts.get(name)

    def load(self, params: ModelParams) -> LlamaModel:
        """Build the model; `params.overrides` come first (first match wins), then the repack overrides
        of the resident weights (streamed ones are left to the streamer)."""
        from tqdm import tqdm

        resident_repack = {n: b for n, b in self.repack_bufts.items() if not self.is_streamed(n)}
        if resident_repack:
            params = replace(params, overrides=tuple(params.overrides) + repack_overrides(resident_repack), _keep=[])
        resident = sum(t.size for n, t in self.index.tensors.items() if not self.is_streamed(n) and n not in self.mapped)
        self._progress = tqdm(total=resident, unit="B", unit_scale=True, desc="loading resident weights",
                              disable=None, leave=False)
        try:
            model = load_from_user(self.index.ctx, self.on_tensor, params, self.path)
        finally:
            self._progress.close()
            if self._staging is not None:
                self._staging.close()
                self._staging = None
        for t, info in self._to_map:
            self.file_map.point(t, info.name, info.offset, info.size)
        if self.neutral:
            log.info("%d tensors absent from the file were given neutral values: %s", len(self.neutral),
                     ", ".join(self.neutral[:8]))
        return model

    def _staging_for(self, size: int) -> AlignedBuffer:
        if self._staging is None or self._staging.size < size:
            if self._staging is not None:
                self._staging.close()
            self._staging = AlignedBuffer(max(size, 64 << 20))
        return self._staging

    def on_tensor(self, t) -> None:
        name = ffi.string(t.name).decode()
        nbytes = lib.ggml_nbytes(t)
        info = self.index.tensors.get(name)
        if info is None:
            self._fill_neutral(t, name, nbytes)
            return
        if info.size != nbytes:
            raise StreamError(f"{self.path}: tensor {name} has {info.size} bytes in the file, llama.cpp expects {nbytes}")
        if self.is_streamed(name):
            self.streamed[name] = t
            return
        if name in self.mapped and not info.parts and name not in self.repack_bufts and self.file_map is not None:
            self._to_map.append((t, info))
            return
        self.resident[name] = t
        if info.parts:
            self._load_composed(t, info)
            return
        start, length = aligned_span(info.offset, info.size)
        stage = self._staging_for(length)
        for fut in self.reader.submit(stage.view[:length], start):
            fut.result()
        lib.ggml_backend_tensor_set(t, stage.ptr + (info.offset - start), 0, nbytes)
        self.bytes_loaded += nbytes
        self._progress.update(nbytes)

    def _load_composed(self, t, info: TensorLocation) -> None:
        """Fill a composed expert tensor expert by expert from its parts' file bytes."""
        n_exp = int(t.ne[2])
        per = sum(nb for _, nb in info.parts)
        for e in range(n_exp):
            pos = 0
            for off, nb in info.parts:
                start, length = aligned_span(off + e * nb, nb)
                stage = self._staging_for(length)
                for fut in self.reader.submit(stage.view[:length], start):
                    fut.result()
                lib.ggml_backend_tensor_set(t, stage.ptr + (off + e * nb - start), e * per + pos, nb)
                pos += nb
        self.bytes_loaded += info.size
        self._progress.update(info.size)

    def _fill_neutral(self, t, name: str, nbytes: int) -> None:
        if t.type != lib.GGML_TYPE_F32:
            raise StreamError(f"{self.path}: tensor {name} is missing from the file")
        if _NEUTRAL_ONE.search(name):
            value = 1.0
        elif _NEUTRAL_ZERO.search(name):
            value = 0.0
        else:
            raise StreamError(f"{self.path}: tensor {name} is missing from the file and has no neutral value")
        data = ffi.new("float[]", [value] * (nbytes // 4))
        lib.ggml_backend_tensor_set(t, data, 0, nbytes)
        self.neutral.append(name)
        self.neutral_tensors[name] = (t, value)

    def close(self) -> None:
        self.index.close()


def model_files(path: str | os.PathLike) -> list[str]:
    """The files of the model at `path`: its shards in order for a split set, else itself."""
    try:
        return [os.fspath(f.path) for f in read_header(path).files]
    except GGUFError as exc:
        raise StreamError(f"{os.fspath(path)}: not a readable GGUF file ({exc})") from None

"""A defensive, read-only GGUF header parser (`read_header`; checks before llama.cpp: gguf_validate.py).

llama.cpp aborts (not throws) on some malformed files, so the engine validates a file here before
llama.cpp sees it. The parser walks the header once through a read-only ``mmap`` with bounds checks
on every count, length and offset, so a hostile header cannot make it allocate or loop without limit:
it touches only the header's pages (milliseconds even for a 40 GB file). Long arrays (the vocabulary,
merges) are skipped and kept only as their length. ``gguf.GGUFReader`` is not used for this: it builds
a numpy view per array element (seconds for a 262k-token vocabulary) and trusts the counts it reads.

Layout (GGUF v2/v3, little endian): magic ``GGUF``, u32 version, u64 n_tensors, u64 n_kv, the key/values,
the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset relative to the data
section), padding to ``general.alignment`` (default 32), the data section.

A split set (``name-00001-of-0000N.gguf``, as ``llama-gguf-split`` writes it: every shard a GGUF with
``split.no``, ``split.count``, ``split.tensors.count``; the key/values in the first) is read as one model
from its first shard: every tensor in exactly one shard, each ``RawTensor`` naming its shard's file.
"""
from __future__ import annotations

import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
HEADER_ONLY_KEY = "hypura.header_only"
VOCAB_KEY = "tokenizer.ggml.tokens"
MAX_TENSORS = 1 << 20           # llama.cpp models have ~1-10k tensors
MAX_KV = 1 << 16
MAX_STRING = 1 << 20            # keys, names and values; a chat template is ~10 KB
MAX_ARRAY = 1 << 26             # elements of one array (a vocabulary is ~10^5-10^6)
KEEP_ARRAY = 4096               # arrays up to this length keep their values (per-layer hparams)
MAX_DIMS = 4                    # GGML_MAX_DIMS
MAX_ELEMENTS = 1 << 50
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """A file that is not a usable GGUF: the message names the file and the problem."""


class GGUFTruncated(GGUFError):
    """The file ends inside its header (a prefix of a GGUF: a longer prefix may parse)."""


@dataclass(frozen=True)
class RawTensor:
    """One entry of the tensor table: ``shape`` is ggml's ``ne`` (innermost first)."""
    name: str
    ggml_type: int
    shape: tuple[int, ...]
    offset: int                 # absolute file offset of the data (in ``path``)
    nbytes: int
    path: Path | None = None    # the file holding the data: the model file, or its shard of a split set


@dataclass
class GGUFHeader:
    """What the header says, plus where the data section starts and how long the file is."""
    path: Path
    version: int
    file_size: int
    alignment: int
    data_offset: int
    kv: dict[str, Any] = field(default_factory=dict)          # long arrays are omitted ...
    array_lengths: dict[str, int] = field(default_factory=dict)  # ... but their length is here
    tensors: list[RawTensor] = field(default_factory=list)   # of every shard of a split set
    shards: list[GGUFHeader] = field(default_factory=list)    # a split set's shards in order (empty: one file)

    @property
    def header_only(self) -> bool:
        """Written by Hypura's synthetic writer with the tensor table but no tensor data."""
        return bool(self.kv.get(HEADER_ONLY_KEY, False))

    @property
    def files(self) -> list[GGUFHeader]:
        """The headers of the model's files: its shards, or itself."""
        return self.shards or [self]

    @property
    def total_size(self) -> int:
        """Bytes of all the model's files."""
        return sum(f.file_size for f in self.files)

    @property
    def complete(self) -> bool:
        """Every tensor's data is there: not marked header-only, and no file ends before its last tensor
        (a header cut anywhere after its tensor table can be planned, not run)."""
        return not self.header_only and all(f.data_end <= f.file_size for f in self.files)

    @property
    def data_end(self) -> int:
        """The end of this file's last tensor data (= data_offset when there are no tensors)."""
        return max((t.offset + t.nbytes for t in self.tensors if t.path in (None, self.path)),
                   default=self.data_offset)

    def kv_summary(self, max_array: int = 64) -> dict[str, Any]:
        """The key/values with every array longer than ``max_array`` (token lists, merges, scores) as None."""
        return {k: None if isinstance(v, list) and len(v) > max_array else v for k, v in self.kv.items()}

    @property
    def n_elements(self) -> int:
        """The weights' element count (the parameter count)."""
        return sum(math.prod(t.shape) for t in self.tensors)


def tensor_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of this type and ``ne``; ValueError for an unknown type or a bad row length."""
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown ggml type {ggml_type}") from None
    if shape[0] % block:
        raise ValueError(f"row length {shape[0]} is not a multiple of the block size {block}")
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise EOFError(f"header cut off while reading {what} at byte {self.pos}")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        if n > MAX_STRING:
            raise ValueError(f"{what}: string length {n} is absurd")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        n = self.unpack("<Q", what)
        if n > MAX_STRING:
            raise ValueError(f"{what}: string length {n} is absurd")
        self.need(n, what)
        self.pos += n

    def value(self, vtype: int, key: str) -> tuple[Any, int | None]:
        """(value, array length or None); arrays longer than KEEP_ARRAY come back as None."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], key), None
        if vtype == _STRING:
            return self.string(key), None
        if vtype != _ARRAY:
            raise ValueError(f"key {key!r} has unknown value type {vtype}")
        etype, n = self.unpack("<I", key), self.unpack("<Q", key)
        if etype == _ARRAY:
            raise ValueError(f"key {key!r}: nested arrays are not supported")
        if n > MAX_ARRAY:
            raise ValueError(f"key {key!r}: array length {n} is absurd")
        if etype in _SCALARS:
            size = struct.calcsize(_SCALARS[etype])
            self.need(n * size, key)
            if n > KEEP_ARRAY:
                self.pos += n * size
                return None, n
            fmt = "<" + _SCALARS[etype][1] * n
            values = list(struct.unpack_from(fmt, self.buf, self.pos))
            self.pos += n * size
            return values, n
        if etype != _STRING:
            raise ValueError(f"key {key!r}: unknown array element type {etype}")
        self.need(8 * n, key)               # every string has at least its length
        if key == VOCAB_KEY:
            return self._vocab(n)
        if n > KEEP_ARRAY:
            for _ in range(n):
                self.skip_string(key)
            return None, n
        return [self.string(key) for _ in range(n)], n

    def _vocab(self, n: int) -> tuple[list[str] | None, int]:
        """The token list, checked for duplicates (llama.cpp asserts, = aborts, on them)."""
        seen: set[bytes] = set()
        for i in range(n):
            start = self.pos + 8
            self.skip_string(VOCAB_KEY)
            tok = bytes(self.buf[start:self.pos])
            if tok in seen:
                raise ValueError(f"{VOCAB_KEY}: token #{i} {tok[:40]!r} is a duplicate")
            seen.add(tok)
        return None, n


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse the header of ``path`` (read-only, bounded), and of every other shard when it is the first of a
    split set. Raises :class:`GGUFError`, naming the file (a missing, extra or mismatched shard too)."""
    first = _read_file(Path(path))
    count = first.kv.get(SPLIT_COUNT)
    if isinstance(count, int) and not isinstance(count, bool) and count > 1:
        return _read_split(first, count)
    return first


def read_file_header(path: str | os.PathLike) -> GGUFHeader:
    """The header of this one file (a split set's shard alone, not joined with the others)."""
    return _read_file(Path(path))


def _read_file(p: Path) -> GGUFHeader:
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                head = f.read(4)
                if head[:len(head)] != MAGIC[:len(head)] or not head:
                    raise GGUFError(f"{p}: not a GGUF file (bad magic {head!r})")
                raise GGUFTruncated(f"{p}: truncated: {size} bytes is shorter than a GGUF header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(p, mm, size)
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{p}: is a directory, not a GGUF file") from None
    except PermissionError as exc:
        raise GGUFError(f"{p}: cannot read: {exc.strerror}") from None


def _parse(p: Path, mm: Any, size: int) -> GGUFHeader:
    c = _Cursor(mm, size)
    magic = bytes(mm[:4])
    if magic != MAGIC:
        raise GGUFError(f"{p}: not a GGUF file (bad magic {magic!r})")
    c.pos = 4
    try:
        version = c.unpack("<I", "version")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = c.unpack("<Q", "tensor count"), c.unpack("<Q", "kv count")
        if n_tensors > MAX_TENSORS or n_tensors * 24 > size:
            raise ValueError(f"tensor count {n_tensors} is absurd for a {size}-byte file")
        if n_kv > MAX_KV or n_kv * 12 > size:
            raise ValueError(f"key/value count {n_kv} is absurd for a {size}-byte file")
        kv: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for i in range(n_kv):
            key = c.string(f"key #{i}")
            if key in kv:
                raise ValueError(f"duplicate key {key!r}")
            value, n = c.value(c.unpack("<I", key), key)
            kv[key] = value
            if n is not None:
                lengths[key] = n
        alignment = kv.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 20:
            raise ValueError(f"general.alignment {alignment!r} is not a power of two")
        raw: list[tuple[str, int, tuple[int, ...], int]] = []
        seen: set[str] = set()
        for i in range(n_tensors):
            name = c.string(f"tensor name #{i}")
            if name in seen:
                raise ValueError(f"duplicate tensor {name!r}")
            seen.add(name)
            n_dims = c.unpack("<I", name)
            if not 1 <= n_dims <= MAX_DIMS:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(c.unpack("<Q", name) for _ in range(n_dims))
            elements = 1
            for d in shape:
                if d == 0 or d > MAX_ELEMENTS:
                    raise ValueError(f"tensor {name!r} has dimension {d}")
                elements *= d
            if elements > MAX_ELEMENTS:
                raise ValueError(f"tensor {name!r} has {elements} elements")
            gtype, offset = c.unpack("<I", name), c.unpack("<Q", name)
            raw.append((name, gtype, shape, offset))
    except EOFError as exc:
        raise GGUFTruncated(f"{p}: truncated: {exc}") from None
    except ValueError as exc:
        raise GGUFError(f"{p}: bad header: {exc}") from None
    data_offset = -(-c.pos // alignment) * alignment
    header = GGUFHeader(p, version, size, alignment, data_offset, kv, lengths)
    for name, gtype, shape, offset in raw:
        try:
            nbytes = tensor_nbytes(gtype, shape)
        except ValueError as exc:
            raise GGUFError(f"{p}: bad header: tensor {name!r}: {exc}") from None
        if offset % alignment:
            raise GGUFError(f"{p}: bad header: tensor {name!r} offset {offset} is not aligned to {alignment}")
        if offset > 1 << 62:
            raise GGUFError(f"{p}: bad header: tensor {name!r} offset {offset} is out of range")
        header.tensors.append(RawTensor(name, gtype, shape, data_offset + offset, nbytes, p))
    return header


def _read_split(first: GGUFHeader, count: int) -> GGUFHeader:
    """The shards of the split set ``first`` opens, checked against each other, as one header."""
    m = SPLIT_NAME.match(first.path.name)
    if first.kv.get(SPLIT_NO) != 0 or not m or int(m["no"]) != 1 or int(m["count"]) != count:
        raise GGUFError(f"{first.path}: not the first shard of a split set of {count} (split.no "
                        f"{first.kv.get(SPLIT_NO)!r}): open <name>-00001-of-{count:05d}.gguf")
    names = [f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    pattern = re.compile(re.escape(m["prefix"]) + r"-\d{5}-of-\d{5}\.gguf$")
    extra = sorted(q.name for q in first.path.parent.iterdir() if pattern.match(q.name) and q.name not in names)
    if extra:
        raise GGUFError(f"{first.path.parent / extra[0]}: a shard that is not one of the {count} of {first.path.name}")
    shards = [first]
    for i, name in enumerate(names[1:], start=1):
        q = first.path.with_name(name)
        if not q.exists():
            raise GGUFError(f"{q}: missing shard {i + 1} of {count} of {first.path.name}")
        shard = _read_file(q)
        if shard.kv.get(SPLIT_NO) != i or shard.kv.get(SPLIT_COUNT) != count:
            raise GGUFError(f"{q}: mismatched shard: split.no {shard.kv.get(SPLIT_NO)!r} of split.count "
                            f"{shard.kv.get(SPLIT_COUNT)!r}, expected {i} of {count} (of {first.path.name})")
        shards.append(shard)
    seen: set[str] = set()
    tensors: list[RawTensor] = []
    for shard in shards:
        for t in shard.tensors:
            if t.name in seen:
                raise GGUFError(f"{shard.path}: bad split set: tensor {t.name!r} is in two shards")
            seen.add(t.name)
            tensors.append(t)
    want = first.kv.get(SPLIT_TENSORS)
    if isinstance(want, int) and want != len(tensors):
        raise GGUFError(f"{first.path}: bad split set: {SPLIT_TENSORS} is {want}, the {count} shards hold {len(tensors)}")
    return GGUFHeader(first.path, first.version, first.file_size, first.alignment, first.data_offset, first.kv,
                      first.array_lengths, tensors, shards)

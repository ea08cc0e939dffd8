"""A fast reader of a GGUF file's header: key/values and tensor shapes, nothing else.

`gguf.GGUFReader` builds a numpy view per array element (14 s for a 262k-token vocabulary);
this walks the header once with `struct`, skips long arrays, and reads only what the API reports.
"""
from __future__ import annotations

import struct
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_ARRAY = 64     # longer arrays (token lists, merges, scores) are skipped and reported as None


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 26:
            raise ValueError("implausible string length in GGUF header")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if n <= MAX_ARRAY:
                return [self.value(etype) for _ in range(n)]
            if etype in _SCALARS:
                self.f.seek(n * struct.calcsize(_SCALARS[etype]), 1)
            else:
                for _ in range(n):
                    self.skip(etype)
            return None
        raise ValueError(f"unknown GGUF value type {vtype}")

    def skip(self, vtype: int) -> None:
        if vtype == _STRING:
            self.f.seek(self.unpack("<Q"), 1)
        else:
            self.value(vtype)


def read_header(path: str) -> tuple[dict[str, Any], list[tuple[str, list[int]]]]:
    """``(key/values, [(tensor name, shape)])`` of a GGUF file. Raises ValueError if it is not one."""
    with open(path, "rb", buffering=1 << 20) as f:
        if f.read(4) != _MAGIC:
            raise ValueError("not a GGUF file (bad magic)")
        r = _Reader(f)
        version = r.unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            kv[key] = r.value(r.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
            r.unpack("<I")   # ggml type
            r.unpack("<Q")   # offset
            tensors.append((name, dims))
    return kv, tensors

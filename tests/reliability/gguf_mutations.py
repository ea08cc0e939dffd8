"""Hostile GGUF files: a map of every header field of a real file, and mutations of it.

`header_fields` walks a GGUF header (independently of `hypura_placement.gguf_file`, so the validator is
not checked against itself) and records where each field lies: counts, string lengths, value types,
array element types and lengths, values, tensor dims, ggml types, offsets. `mutate` rewrites one or more
of them with boundary values, truncates, empties, or overwrites/splices raw bytes. Everything is
deterministic given its arguments, so hypothesis can shrink and replay cases.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class Field:
    pos: int
    fmt: str           # struct format of the field
    kind: str          # version | n_tensors | n_kv | strlen | vtype | etype | alen | value | ndims | dim | ttype | offset
    label: str         # the key or tensor it belongs to


def header_fields(data: bytes) -> tuple[list[Field], int]:
    """(fields, end of the tensor table) of a well-formed GGUF file."""
    fields: list[Field] = []
    pos = 0

    def take(fmt: str, kind: str, label: str) -> int:
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        fields.append(Field(pos, fmt, kind, label))
        pos += struct.calcsize(fmt)
        return v

    def string(label: str) -> str:
        nonlocal pos
        n = take("<Q", "strlen", label)
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    assert data[:4] == b"GGUF"
    pos = 4
    take("<I", "version", "")
    n_tensors = take("<Q", "n_tensors", "")
    n_kv = take("<Q", "n_kv", "")
    for _ in range(n_kv):
        key = string("key")
        vtype = take("<I", "vtype", key)
        if vtype == 9:
            etype = take("<I", "etype", key)
            n = take("<Q", "alen", key)
            for i in range(n):
                if etype == 8:
                    # only the first few element strings are recorded (a vocabulary has thousands)
                    if i < 4:
                        string(key)
                    else:
                        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
                elif i < 4:
                    take(_SCALAR[etype], "value", key)
                else:
                    pos += struct.calcsize(_SCALAR[etype])
        elif vtype == 8:
            string(key)
        else:
            take(_SCALAR[vtype], "value", key)
    for _ in range(n_tensors):
        name = string("tensor")
        nd = take("<I", "ndims", name)
        for _ in range(nd):
            take("<Q", "dim", name)
        take("<I", "ttype", name)
        take("<Q", "offset", name)
    return fields, pos


def interesting(f: Field, original: int | float, file_size: int) -> list[int | float]:
    """Boundary values for a field of this width and kind."""
    if f.fmt in ("<f", "<d"):
        return [0.0, -1.0, 1e38, -1e38, float("nan"), float("inf"), float("-inf"), 1e-45]
    if f.fmt == "<?":
        return [0, 1]
    bits = struct.calcsize(f.fmt) * 8
    signed = f.fmt[1].islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    vals = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 31, 32, 33, 39, 64, 255, 256, 4095, 4096, 65535, 65536,
            (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1 << 40, 1 << 62, (1 << 63) - 1,
            1 << 63, (1 << 64) - 1, file_size, file_size - 1, file_size + 1, file_size // 2}
    if isinstance(original, int) and not isinstance(original, bool):
        vals |= {original - 1, original + 1, original * 2, original * 4096, original + 32, original - 32}
    if signed:
        vals |= {-1, -2, lo, lo + 1}
    return sorted(v for v in vals if lo <= v <= hi)


def set_field(buf: bytearray, f: Field, value: int | float) -> None:
    struct.pack_into(f.fmt, buf, f.pos, value)


def read_field(data: bytes, f: Field) -> int | float:
    return struct.unpack_from(f.fmt, data, f.pos)[0]


OPS = ("field", "field", "field", "field", "hparam", "truncate", "bytes", "splice", "empty", "tail")


def mutate(base: bytes, fields: list[Field], header_end: int, rng) -> tuple[str, bytes]:
    """One hostile variant of `base`: 1-3 mutations drawn from `rng` (a `random.Random`, or hypothesis's)."""
    buf = bytearray(base)
    notes = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.choice(OPS)
        if op in ("field", "hparam"):
            pool = [f for f in fields if f.kind == "value"] if op == "hparam" else fields
            f = rng.choice(pool)
            if f.pos + struct.calcsize(f.fmt) > len(buf):
                continue
            orig = read_field(buf, f)
            vals = interesting(f, orig, len(buf))
            value = rng.choice(vals) if rng.random() < 0.85 else _random_value(f, rng)
            set_field(buf, f, value)
            notes.append(f"{f.kind}[{f.label}]@{f.pos}: {orig!r}->{value!r}")
        elif op == "truncate":
            n = rng.randint(0, header_end + 64) if rng.random() < 0.7 else rng.randint(0, max(len(buf) - 1, 0))
            del buf[n:]
            notes.append(f"truncate to {n}")
        elif op == "tail":
            n = rng.randint(1, 4096)
            del buf[max(len(buf) - n, 0):]
            notes.append(f"drop last {n} bytes")
        elif op == "empty":
            buf = bytearray()
            notes.append("empty")
        elif op == "bytes" and header_end:
            pos = rng.randint(0, header_end - 1)
            k = rng.randint(1, 8)
            new = bytes(rng.randint(0, 255) for _ in range(k))
            buf[pos:pos + k] = new
            notes.append(f"overwrite {k} bytes at {pos}")
        elif op == "splice" and header_end:
            a = rng.randint(0, header_end - 1)
            k = rng.randint(1, 64)
            if rng.random() < 0.5:
                del buf[a:a + k]
                notes.append(f"delete {k} bytes at {a}")
            else:
                buf[a:a] = bytes(buf[a:a + k])
                notes.append(f"duplicate {k} bytes at {a}")
    return "; ".join(notes) or "unchanged", bytes(buf)


def _random_value(f: Field, rng) -> int | float:
    if f.fmt in ("<f", "<d"):
        return rng.uniform(-1e6, 1e6)
    if f.fmt == "<?":
        return rng.randint(0, 1)
    bits = struct.calcsize(f.fmt) * 8
    if f.fmt[1].islower():
        return rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return rng.randint(0, (1 << bits) - 1)


def regressions(base: bytes, fields: list[Field]) -> dict[str, bytes]:
    """Files that made llama.cpp abort before validate_gguf learned to reject them (found by this fuzzer),
    plus crafted ones that broke the server's old header reader."""
    out = {}

    def with_value(label: str, value: float | int) -> bytes:
        f = next(f for f in fields if f.kind == "value" and f.label.endswith(label))
        buf = bytearray(base)
        set_field(buf, f, value)
        return bytes(buf)
    out["block_count_65536"] = with_value(".block_count", 65536)
    out["rms_eps_nan"] = with_value(".layer_norm_rms_epsilon", float("nan"))
    out["rms_eps_negative"] = with_value(".layer_norm_rms_epsilon", -1.0)
    out["rms_eps_minus_inf"] = with_value(".layer_norm_rms_epsilon", float("-inf"))
    # a duplicate vocabulary token: the 3rd token string becomes a copy of the 2nd (same length in the fixture)
    toks = [f for f in fields if f.kind == "strlen" and f.label == "tokenizer.ggml.tokens"]
    a, b = toks[1], toks[2]
    la, lb = read_field(base, a), read_field(base, b)
    if la == lb:
        buf = bytearray(base)
        buf[b.pos + 8:b.pos + 8 + lb] = base[a.pos + 8:a.pos + 8 + la]
        out["duplicate_token"] = bytes(buf)
    out["nested_arrays"] = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"x"
                            + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000)
    return out

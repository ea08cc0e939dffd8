"""validate_gguf: good files pass fast; missing, foreign, truncated, header-only and hostile files fail clearly."""
from __future__ import annotations

import shutil
import struct
import time
import tracemalloc

import pytest

from hypura_placement import GGUFError, read_header, validate_gguf


def _header(n_tensors: int, n_kv: int, body: bytes = b"", version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body


def _string(s: str | bytes, length: int | None = None) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def _tensor(name: str, shape: tuple[int, ...], gtype: int, offset: int) -> bytes:
    return _string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape) + \
        struct.pack("<IQ", gtype, offset)


def test_real_model_validates_fast(default_model):
    t0 = time.perf_counter()
    h = validate_gguf(default_model)
    assert time.perf_counter() - t0 < 1.0
    assert h.kv["general.architecture"] == "gemma3" and len(h.tensors) == 236
    assert h.data_end == h.file_size and not h.header_only
    assert h.array_lengths["tokenizer.ggml.tokens"] == 262144


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match=r"nope\.gguf: no such file"):
        validate_gguf(tmp_path / "nope.gguf")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + b"\0" * 100, b"hello, I am a text file" * 10])
def test_not_gguf(tmp_path, content):
    p = tmp_path / "x.gguf"
    p.write_bytes(content)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        validate_gguf(p)
    assert isinstance(GGUFError("x"), ValueError)


def test_truncated_data_and_header(tmp_path, synthetic):
    good = synthetic("llama3-70b")
    h = validate_gguf(good)
    cut = tmp_path / "cut.gguf"
    shutil.copy(good, cut)
    with open(cut, "r+b") as f:
        f.truncate(h.file_size - 1000)
    with pytest.raises(GGUFError, match=r"cut\.gguf: truncated: tensor 'output.weight' ends at byte"):
        validate_gguf(cut)
    with open(cut, "r+b") as f:
        f.truncate(h.data_offset // 2)               # inside the key/values (the vocabulary)
    with pytest.raises(GGUFError, match="truncated: header cut off"):
        validate_gguf(cut)


def test_header_only_is_not_truncated(tmp_path):
    from hypura_synthetic import write_synthetic

    p = write_synthetic(tmp_path / "h.gguf", "mixtral-8x7b", layers=2, scale=32, vocab=512, header_only=True)
    with pytest.raises(GGUFError, match="header-only file"):
        validate_gguf(p)
    h = validate_gguf(p, allow_header_only=True)
    assert h.header_only and h.data_end > h.file_size
    with open(p, "r+b") as f:                       # a header-only file cut inside its header is truncated
        f.truncate(h.data_offset - 100)
    with pytest.raises(GGUFError, match="truncated"):
        validate_gguf(p, allow_header_only=True)


@pytest.mark.parametrize("body,match", [
    (_header(1 << 40, 0), "tensor count .* is absurd"),
    (_header(0, 1 << 40), "key/value count .* is absurd"),
    (_header(0, 1, _string("k", 1 << 60)), "string length .* is absurd"),
    (_header(0, 1, _string("k") + struct.pack("<IIQ", 9, 4, 1 << 60)), "array length .* is absurd"),
    (_header(0, 1, _string("k") + struct.pack("<IIQ", 9, 4, 1 << 20)), "truncated"),
    (_header(0, 1, _string("k") + struct.pack("<I", 77)), "unknown value type 77"),
    (_header(1, 0, _tensor("t", (32,) * 5, 0, 0)), "5 dimensions"),
    (_header(1, 0, _tensor("t", (32, 0), 0, 0)), "dimension 0"),
    (_header(1, 0, _tensor("t", (1 << 40, 1 << 40), 0, 0)), "elements"),
    (_header(1, 0, _tensor("t", (32,), 999, 0)), "unknown ggml type 999"),
    (_header(1, 0, _tensor("t", (33,), 2, 0)), "not a multiple of the block size"),
    (_header(1, 0, _tensor("t", (32,), 0, 7)), "not aligned"),
    (_header(2, 0, _tensor("t", (32,), 0, 0) + _tensor("t", (32,), 0, 128)), "duplicate tensor"),
    (_header(2, 0, _tensor("a", (64,), 0, 0) + _tensor("b", (64,), 0, 128)), "overlap"),
    (_header(0, 0, version=7), "unsupported GGUF version 7"),
])
def test_hostile_headers(tmp_path, body, match):
    p = tmp_path / "evil.gguf"
    p.write_bytes(body + b"\0" * 4096)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(GGUFError, match=match) as err:
        validate_gguf(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(p) in str(err.value)
    assert time.perf_counter() - t0 < 1.0 and peak < 16 << 20


def test_data_past_end_of_file(tmp_path):
    p = tmp_path / "short.gguf"
    p.write_bytes(_header(1, 0, _tensor("t", (1024,), 0, 0)).ljust(64, b"\0") + b"\0" * 100)
    with pytest.raises(GGUFError, match="truncated: tensor 't' ends at byte"):
        validate_gguf(p)
    assert read_header(p).tensors[0].nbytes == 4096


def test_the_one_reader_gives_what_the_server_and_the_loader_need(default_model):
    """The API's view (long arrays elided, the parameter count) and the loader's (absolute offsets and sizes
    that tile the data section) come from this one header read."""
    h = read_header(default_model)
    brief = h.kv_summary()
    assert brief["general.architecture"] == "gemma3"
    assert "tokenizer.ggml.tokens" in brief and brief["tokenizer.ggml.tokens"] is None      # 262144 tokens
    assert all(not isinstance(v, list) or len(v) <= 64 for v in brief.values())
    assert 260e6 < h.n_elements < 280e6                                                   # gemma3:270m
    spans = sorted((t.offset, t.nbytes) for t in h.tensors)
    assert spans[0][0] == h.data_offset and all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:]))


def _split_set(d, n_tensors=5, per_shard=2):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(d / "m.gguf", "llama", split_max_tensors=per_shard)   # llama.cpp's gguf-py, as gguf-split
    w.add_block_count(1)
    for i in range(n_tensors):
        w.add_tensor(f"t{i}", np.full(64, i, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(d.glob("m-*-of-*.gguf"))


def test_a_split_set_is_one_model(tmp_path):
    import numpy as np

    shards = _split_set(tmp_path)
    assert [p.name for p in shards] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    h = validate_gguf(shards[0])
    assert [t.name for t in h.tensors] == [f"t{i}" for i in range(5)] and len(h.files) == 3 and h.complete
    assert [t.path.name for t in h.tensors] == [shards[i].name for i in (0, 0, 1, 1, 2)]
    assert h.total_size == sum(p.stat().st_size for p in shards)
    for i, t in enumerate(h.tensors):       # each tensor's bytes are at its offset in its own shard
        with open(t.path, "rb") as f:
            f.seek(t.offset)
            assert (np.frombuffer(f.read(t.nbytes), np.float32) == i).all()
    with pytest.raises(GGUFError, match=r"m-00002-of-00003\.gguf: not the first shard"):
        read_header(shards[1])


def test_split_set_missing_extra_or_mismatched_shard(tmp_path):
    shards = _split_set(tmp_path)
    (tmp_path / "m-00004-of-00004.gguf").write_bytes(shards[2].read_bytes())
    with pytest.raises(GGUFError, match=r"m-00004-of-00004\.gguf: a shard that is not one of the 3"):
        read_header(shards[0])
    (tmp_path / "m-00004-of-00004.gguf").unlink()
    saved = shards[1].read_bytes()
    shards[1].write_bytes(shards[2].read_bytes())
    with pytest.raises(GGUFError, match=r"m-00002-of-00003\.gguf: mismatched shard"):
        read_header(shards[0])
    shards[1].write_bytes(saved)
    shards[2].unlink()
    with pytest.raises(GGUFError, match=r"m-00003-of-00003\.gguf: missing shard 3 of 3"):
        validate_gguf(shards[0])


def test_a_header_cut_after_its_tensor_table_can_be_planned_not_run(tmp_path, synthetic):
    from hypura_placement import inspect_model, load_hardware, plan_placement

    good = synthetic("llama3-70b")
    h = validate_gguf(good)
    for keep in (h.data_offset - 1, h.data_offset, h.data_offset + 4096, h.file_size - 1):
        cut = tmp_path / f"cut{keep}.gguf"
        with open(good, "rb") as src, open(cut, "wb") as dst:
            dst.write(src.read(keep))
        with pytest.raises(GGUFError, match="truncated: tensor"):
            validate_gguf(cut)                                    # run refuses it
        assert not validate_gguf(cut, allow_header_only=True).complete
        info = inspect_model(cut)
        assert info.header_only and len(info.tensors) == len(h.tensors)
        plan_placement(info, load_hardware("cpu-2c-24g"), ctx=256)

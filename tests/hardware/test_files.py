"""Atomic writes: the old file or the new one, never a part, and no temporary file left behind."""
from __future__ import annotations

import json

import pytest

from hypura_hardware.files import atomic_write, write_json_atomic


def test_json_written_and_replaced(tmp_path):
    path = tmp_path / "sub" / "state.json"
    assert write_json_atomic(path, {"b": 1, "a": [2]}, sort_keys=True) == path
    assert path.read_text() == '{"a": [2], "b": 1}\n'
    write_json_atomic(path, {"c": 3})
    assert json.loads(path.read_text()) == {"c": 3}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, "wb") as f:
        f.write(b"half of the new")
        raise RuntimeError("digest mismatch")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["blob"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not json": object()})
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["blob"]

"""Direct-I/O read bandwidth: real files in real directories, small sizes so the suite stays fast."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypura_hardware.storage import (ReadPattern, default_patterns, filesystem_type, measure_pattern,
                                     measure_storage, open_direct, write_test_file)

MiB = 1 << 20


def test_default_patterns_cover_sequential_and_expert_sized_reads():
    patterns = default_patterns()
    assert {(p.kind, p.block) for p in patterns} == {("seq", 8 * MiB), ("rand", MiB), ("rand", 4 * MiB)}
    assert {p.qd for p in patterns} == {1, 4, 16}


def test_measure_storage_table_and_cleanup(tmp_path):
    models = tmp_path / "models"  # created if missing
    result = measure_storage(models, file_bytes=16 * MiB, seconds=0.05)
    assert list(models.iterdir()) == []  # the test file is gone
    assert len(result["reads"]) == len(default_patterns())
    for row in result["reads"]:
        assert 0 < row["bytes"] <= 4 * 16 * MiB and row["bytes"] % row["block"] == 0
        assert row["bps"] == pytest.approx(row["bytes"] / row["seconds"])
    seq = max(r["bps"] for r in result["reads"] if r["kind"] == "seq")
    rand = max(r["bps"] for r in result["reads"] if r["kind"] == "rand" and r["block"] == MiB)
    assert result["seq_read_bps"] == seq and result["rand_read_bps"] == rand
    assert result["fstype"] == filesystem_type(tmp_path)
    if result["fstype"] in ("ext4", "xfs", "btrfs"):
        assert result["direct_io"] is True and result["memory_backed"] is False


def test_file_is_removed_when_a_read_fails(tmp_path):
    with pytest.raises(ValueError, match="smaller than one"):
        measure_storage(tmp_path, file_bytes=MiB, patterns=[ReadPattern("seq", 8 * MiB, 1)])
    assert list(tmp_path.iterdir()) == []


def test_reads_return_the_written_bytes(tmp_path):
    """O_DIRECT reads through an aligned mmap buffer see exactly what was written."""
    path = write_test_file(tmp_path, 2 * MiB, block=MiB)
    try:
        expected = path.read_bytes()
        assert len(expected) == 2 * MiB and expected[:MiB] == expected[MiB:]  # one random block, repeated
        import mmap
        fd, _ = open_direct(path)
        buf = mmap.mmap(-1, MiB)
        try:
            assert os.preadv(fd, [buf], MiB) == MiB
            assert bytes(buf) == expected[MiB:]
        finally:
            buf.close()
            os.close(fd)
    finally:
        path.unlink()


def test_unknown_pattern_is_rejected(tmp_path):
    path = write_test_file(tmp_path, MiB, block=MiB)
    with pytest.raises(ValueError, match="unknown read pattern"):
        measure_pattern(path, ReadPattern("zigzag", MiB, 1))
    path.unlink()


@pytest.mark.skipif(not (Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK)), reason="no /dev/shm")
def test_tmpfs_is_reported_as_memory_backed():
    """tmpfs takes O_DIRECT on Linux >= 6.6 but the bytes come from RAM: the result must say so."""
    if filesystem_type(Path("/dev/shm")) != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs")
    d = Path("/dev/shm") / f"hypura-test-{os.getpid()}"
    try:
        result = measure_storage(d, file_bytes=8 * MiB, patterns=[ReadPattern("seq", MiB, 1)], seconds=0.02)
        assert result["fstype"] == "tmpfs" and result["memory_backed"] is True and result["seq_read_bps"] > 0
    finally:
        for p in d.glob("*"):
            p.unlink()
        d.rmdir()

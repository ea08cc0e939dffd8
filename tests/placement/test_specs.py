"""Sizes, hardware presets and profiles."""
from __future__ import annotations

import json

import pytest

from hypura_placement import PRESETS, HardwareSpec, load_hardware, parse_size


@pytest.mark.parametrize("text,value", [("8G", 8 << 30), ("512M", 512 << 20), ("16GiB", 16 << 30),
                                        ("1.5T", 3 << 39), ("123", 123), ("2KB", 2000), (" 4 g ", 4 << 30), (7, 7)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "G", "8X", "-1G", "1iB", "eight", -5])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_presets_are_complete():
    assert {"mac-m1max-32g", "mac-m2ultra-192g", "rtx4090-64g", "h100-80g", "cpu-2c-24g"} <= set(PRESETS)
    for name in PRESETS:
        hw = load_hardware(name)
        assert hw.name == name and hw.ram_total > 0 and hw.disk_seq_read_bps > 0 and hw.compute_flops > 0
        assert (hw.gpu is None) == (hw.upload_bps is None)
        assert HardwareSpec.from_dict(hw.to_dict()) == hw
    assert load_hardware("mac-m1max-32g").unified_memory and load_hardware("cpu-2c-24g").gpu is None


def test_profile_shape_and_files(tmp_path):
    profile = {"name": "local", "host": "h", "gpu": None, "upload_bps": None,
               "ram": {"total": 24 << 30, "available": 20 << 30, "bandwidth": 25e9, "cgroup": None},
               "disk": {"seq_read_bps": 2e9, "rand_read_bps": 1e9, "direct_io": True},
               "cpu": {"cores": 2, "model": "x", "flops": 6e10}, "devices": []}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    hw = load_hardware(path)
    assert (hw.ram_available, hw.disk_seq_read_bps, hw.cpu_cores, hw.compute_bandwidth) == (20 << 30, 2e9, 2, 25e9)
    gpu = {**profile, "gpu": {"name": "g", "memory_total": 8 << 30, "memory_free": 6 << 30, "bandwidth": None},
           "upload_bps": None}
    hw = HardwareSpec.from_dict(gpu)
    assert hw.gpu.memory_free == 6 << 30 and hw.upload_bps > 0 and hw.compute_bandwidth > hw.ram_bandwidth
    with pytest.raises(LookupError, match="unknown hardware"):
        load_hardware("nope")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a hardware profile"):
        load_hardware(tmp_path / "bad.json")

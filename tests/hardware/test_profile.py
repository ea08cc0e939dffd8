"""The profile: its shape (shared with the planner), the cache and its staleness rule, `hypura profile`."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypura_hardware import fingerprint, load_or_measure, ram_info, read_cached, staleness, write_cached
from hypura_hardware.dirs import user_cache_dir
from hypura_hardware.profile import VERSION

MiB = 1 << 20
QUICK = {"disk_file_bytes": 8 * MiB, "disk_seconds": 0.02, "ram_bytes": 8 * MiB, "compute_seconds": 0.01, "progress": False}


@pytest.fixture(scope="module")
def devices() -> list[dict]:
    """The binding's real device list where it is built; else what a CPU-only build reports."""
    try:
        from hypura_llama import list_devices
    except ImportError:
        ram = ram_info()
        return [{"name": "CPU", "description": "cpu", "type": "cpu", "memory_total": ram["total"],
                 "memory_free": ram["available"]}]
    return list_devices()


@pytest.fixture(scope="module")
def full(tmp_path_factory, devices):
    """One measurement with the default settings (the real cost of `hypura profile`)."""
    root = tmp_path_factory.mktemp("profile")
    start = time.perf_counter()
    from hypura_engine.decode_rate import measure_decode_bps

    profile = load_or_measure(root / "models", devices=devices, cache=root / "cache/profile.json", progress=False,
                              decode_rate=measure_decode_bps)
    return root, profile, time.perf_counter() - start


def test_full_measurement_is_fast_enough_and_cached(full):
    root, profile, elapsed = full
    assert elapsed < 20
    assert read_cached(root / "cache/profile.json") == json.loads(json.dumps(profile))
    assert list((root / "models").iterdir()) == []


def test_shape_shared_with_the_planner(full):
    _, p, _ = full
    assert {"name", "gpu", "ram", "disk", "upload_bps", "cpu", "measured_at", "host"} <= set(p)
    assert p["host"] == socket.gethostname() and abs(p["measured_at"] - time.time()) < 120
    assert p["ram"]["total"] > 0 and 0 < p["ram"]["available"] <= p["ram"]["total"] and p["ram"]["bandwidth"] > 0
    assert p["disk"]["seq_read_bps"] > 0 and p["disk"]["rand_read_bps"] > 0 and len(p["disk"]["reads"]) == 9
    assert p["cpu"]["cores"] >= 1 and p["cpu"]["flops"] > 0
    d = p["cpu"]["decode"]   # a real resident decode: bytes a token touched over its median time
    assert p["cpu"]["decode_bps"] == d["bps"] == pytest.approx(d["weight_bytes"] / d["token_s"])
    assert d["weight_bytes"] > 100e6 and 0.1e9 < d["bps"] and d["threads"] >= 1
    if d["llc_bytes"] and d["layers"] < 48 and p["ram"]["available"] > 16 * d["llc_bytes"]:
        assert d["weight_bytes"] >= 1.5 * d["llc_bytes"]            # the kernels' rate, not the cache's
    if p["gpu"] is None:
        assert p["upload_bps"] is None
    else:
        assert {"name", "memory_total", "memory_free", "bandwidth"} <= set(p["gpu"])


def test_fresh_cache_is_reused_with_free_memory_refreshed(tmp_path, devices):
    cache = tmp_path / "p.json"
    first = load_or_measure(tmp_path / "m", devices=devices, cache=cache, **QUICK)
    again = load_or_measure(tmp_path / "m", devices=devices, cache=cache, **QUICK)
    assert again["measured_at"] == first["measured_at"] and again["disk"] == first["disk"]
    assert again["refreshed_at"] >= first["measured_at"]
    assert again["ram"]["available"] == pytest.approx(ram_info()["available"], rel=0.2)
    forced = load_or_measure(tmp_path / "m", force=True, devices=devices, cache=cache, **QUICK)
    assert forced["measured_at"] > first["measured_at"]


@pytest.mark.parametrize("change, reason", [
    (lambda p: p.update(measured_at=p["measured_at"] - 8 * 86400), "days ago"),
    (lambda p: p["fingerprint"].update(host="another-machine"), "host"),
    (lambda p: p["fingerprint"].update(cores=p["fingerprint"]["cores"] + 64), "cores"),
    (lambda p: p["fingerprint"].update(ram_total=1), "ram_total"),
    (lambda p: p["fingerprint"].update(devices=[["CUDA0", "gpu", 1 << 34]]), "devices"),
    (lambda p: p.update(version=0), "version"),
])
def test_stale_cache_is_re_measured(tmp_path, devices, change, reason):
    cache = tmp_path / "p.json"
    first = load_or_measure(tmp_path / "m", devices=devices, cache=cache, **QUICK)
    edited = json.loads(cache.read_text())
    change(edited)
    write_cached(edited, cache)
    assert reason in staleness(edited, fingerprint(devices, ram_info()))
    log: list[str] = []
    again = load_or_measure(tmp_path / "m", devices=devices, cache=cache, log=log.append, **QUICK)
    assert again["measured_at"] > first["measured_at"] and reason in log[0]
    assert read_cached(cache)["measured_at"] == again["measured_at"]


def test_other_models_dir_is_re_measured(tmp_path, devices):
    cache = tmp_path / "p.json"
    first = load_or_measure(tmp_path / "a", devices=devices, cache=cache, **QUICK)
    assert load_or_measure(None, devices=devices, cache=cache, **QUICK)["measured_at"] == first["measured_at"]
    other = load_or_measure(tmp_path / "b", devices=devices, cache=cache, **QUICK)
    assert other["measured_at"] > first["measured_at"] and other["disk"]["path"] == str((tmp_path / "b").resolve())


def test_corrupt_cache_is_re_measured(tmp_path, devices):
    cache = tmp_path / "p.json"
    cache.write_text("{not json")
    assert load_or_measure(tmp_path / "m", devices=devices, cache=cache, **QUICK)["version"] == VERSION
    assert read_cached(cache) is not None


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "hypura"
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = "Library/Caches/hypura" if sys.platform == "darwin" else ".cache/hypura"
    assert user_cache_dir() == Path.home() / expected


def test_cli_profile_json_uses_the_cache(full):
    """`hypura profile --json` end to end (through `python -m`), answered from the cache the fixture wrote."""
    import hypura_llama  # noqa: F401  (the profile lists devices through the binding: it must be built)

    root, profile, _ = full
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "xdg"), "HYPURA_MODELS": str(root / "models"),
           "HYPURA_CONFIG": str(root / "absent.toml")}
    (root / "xdg/hypura").mkdir(parents=True, exist_ok=True)
    (root / "xdg/hypura/profile.json").write_text((root / "cache/profile.json").read_text())
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hypura.commands.profile", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["measured_at"] == profile["measured_at"] and time.perf_counter() - start < 10
    text = subprocess.run([sys.executable, "-m", "hypura.commands.profile", "-q"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "sequential" in text.stdout and "cores" in text.stdout


def test_the_decode_rate_model_outgrows_the_last_level_cache():
    """The kernels' rate is measured on weights the CPU cache cannot hold (a VM may report its host's 480 MiB
    L3), within a quarter of the available RAM."""
    from hypura_engine.decode_rate import LAYER_BYTES, MAX_LAYERS, SHAPE, layers_for

    assert layers_for(None) == layers_for(8 << 20) == SHAPE["layers"]
    assert layers_for(480 << 20) * LAYER_BYTES >= 1.5 * (480 << 20) and layers_for(480 << 20) <= MAX_LAYERS
    small_ram = layers_for(480 << 20, available_bytes=1 << 30)
    assert small_ram * LAYER_BYTES <= (1 << 30) // 4 + SHAPE["layers"] * LAYER_BYTES
    assert layers_for(64 << 30) == MAX_LAYERS

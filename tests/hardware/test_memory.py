"""cgroup-aware RAM detection: fake /proc and /sys trees of real files, and one real v1 cgroup."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypura_hardware.memory import cgroup_levels, linux_ram, read_meminfo

GiB = 1 << 30
MEMINFO = "MemTotal:       33554432 kB\nMemFree:         1048576 kB\nMemAvailable:   20971520 kB\nHugePages_Total:       0\n"
V1_UNLIMITED = "9223372036854771712"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_group(root: Path, rel: str, limit: str, usage: int, inactive_file: int = 0) -> None:
    base = f"sys/fs/cgroup/memory/{rel}".rstrip("/")
    write(root, f"{base}/memory.limit_in_bytes", limit + "\n")
    write(root, f"{base}/memory.usage_in_bytes", f"{usage}\n")
    write(root, f"{base}/memory.stat", f"cache 0\ninactive_file {inactive_file}\ntotal_inactive_file {inactive_file}\n")


def v2_group(root: Path, rel: str, limit: str | None, usage: int, inactive_file: int = 0, mount="sys/fs/cgroup") -> None:
    base = f"{mount}/{rel}".rstrip("/")
    if limit is not None:
        write(root, f"{base}/memory.max", limit + "\n")
    write(root, f"{base}/memory.current", f"{usage}\n")
    write(root, f"{base}/memory.stat", f"anon {usage}\nfile 0\ninactive_file {inactive_file}\n")


def mountinfo(root: Path, *lines: str) -> None:
    write(root, "proc/self/mountinfo", "".join(line + "\n" for line in lines))


V1_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
V2_MOUNT = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"


def test_meminfo_in_bytes(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    info = read_meminfo(tmp_path)
    assert info["MemTotal"] == 32 * GiB and info["MemAvailable"] == 20 * GiB and info["HugePages_Total"] == 0


def test_no_cgroup_limit_uses_meminfo(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n0::/\n")
    mountinfo(tmp_path, V1_MOUNT)
    v1_group(tmp_path, "", V1_UNLIMITED, 5 * GiB)
    ram = linux_ram(tmp_path)
    assert ram == {"total": 32 * GiB, "available": 20 * GiB, "physical_total": 32 * GiB, "cgroup": None}


def test_v1_limit_binds_total_and_available(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "9:pids:/\n4:memory:/job\n0::/\n")
    mountinfo(tmp_path, V1_MOUNT)
    v1_group(tmp_path, "", V1_UNLIMITED, 9 * GiB)
    v1_group(tmp_path, "job", str(8 * GiB), 3 * GiB, inactive_file=1 * GiB)
    ram = linux_ram(tmp_path)
    assert ram["total"] == 8 * GiB
    assert ram["available"] == 6 * GiB  # 8 - (3 - 1 reclaimable)
    assert ram["cgroup"] == {"version": 1, "path": "/job", "limit": 8 * GiB, "usage": 2 * GiB}


def test_v1_nested_parent_limit_is_tighter(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "4:memory:/a/b/c\n")
    mountinfo(tmp_path, V1_MOUNT)
    v1_group(tmp_path, "", V1_UNLIMITED, 9 * GiB)
    v1_group(tmp_path, "a", str(4 * GiB), 3 * GiB)
    v1_group(tmp_path, "a/b", V1_UNLIMITED, 3 * GiB)
    v1_group(tmp_path, "a/b/c", str(16 * GiB), 1 * GiB)
    levels = cgroup_levels(tmp_path)
    assert [lv.path for lv in levels] == ["/a/b/c", "/a/b", "/a", "/"]
    ram = linux_ram(tmp_path)
    assert ram["total"] == 4 * GiB and ram["available"] == 1 * GiB and ram["cgroup"]["path"] == "/a"


def test_v2_max_means_unlimited_and_nested_limit_binds(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "0::/user.slice/app.scope\n")
    mountinfo(tmp_path, V2_MOUNT)
    v2_group(tmp_path, "", None, 10 * GiB)  # the root has no memory.max
    v2_group(tmp_path, "user.slice", "max", 6 * GiB)
    v2_group(tmp_path, "user.slice/app.scope", str(12 * GiB), 4 * GiB, inactive_file=GiB // 2)
    ram = linux_ram(tmp_path)
    assert ram["total"] == 12 * GiB
    assert ram["available"] == 12 * GiB - (4 * GiB - GiB // 2)
    assert ram["cgroup"]["version"] == 2 and ram["cgroup"]["path"] == "/user.slice/app.scope"


def test_v2_available_capped_by_meminfo(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "0::/big\n")
    mountinfo(tmp_path, V2_MOUNT)
    v2_group(tmp_path, "big", str(30 * GiB), 1 * GiB)
    ram = linux_ram(tmp_path)
    assert ram["total"] == 30 * GiB and ram["available"] == 20 * GiB


def test_v2_container_namespace_mount_is_own_cgroup(tmp_path):
    """Inside a cgroup namespace /proc/self/cgroup says "/" and the mount is the container's cgroup."""
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    mountinfo(tmp_path, "29 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw")
    v2_group(tmp_path, "", str(2 * GiB), GiB // 4)
    ram = linux_ram(tmp_path)
    assert ram["total"] == 2 * GiB and ram["available"] == 2 * GiB - GiB // 4


def test_v1_mount_root_is_stripped(tmp_path):
    """A v1 hierarchy mounted at a sub-path: /proc/self/cgroup's path is relative to the hierarchy root."""
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "4:memory:/kubepods/pod1/ctr\n")
    mountinfo(tmp_path, "35 31 0:32 /kubepods/pod1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory")
    v1_group(tmp_path, "", str(3 * GiB), GiB)          # = /kubepods/pod1
    v1_group(tmp_path, "ctr", V1_UNLIMITED, GiB // 2)  # = /kubepods/pod1/ctr
    ram = linux_ram(tmp_path)
    assert ram["total"] == 3 * GiB and ram["available"] == 2 * GiB
    assert ram["cgroup"]["path"] == "/kubepods/pod1"


def test_hybrid_v1_memory_with_v2_unified_without_memory_controller(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "4:memory:/svc\n0::/\n")
    mountinfo(tmp_path, V1_MOUNT, "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw")
    write(tmp_path, "sys/fs/cgroup/unified/cgroup.controllers", "\n")
    v1_group(tmp_path, "svc", str(5 * GiB), GiB)
    ram = linux_ram(tmp_path)
    assert ram["total"] == 5 * GiB and ram["available"] == 4 * GiB


def test_without_mountinfo_conventional_v2_location(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)
    write(tmp_path, "proc/self/cgroup", "0::/svc\n")
    v2_group(tmp_path, "svc", str(7 * GiB), GiB)
    assert linux_ram(tmp_path)["total"] == 7 * GiB


def test_this_machine_matches_sysconf():
    """Without a limit on this process, the total is the physical RAM the kernel reports elsewhere."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    ram = linux_ram()
    assert ram["physical_total"] == pytest.approx(physical, rel=0.01)
    assert 0 < ram["available"] <= ram["total"] <= ram["physical_total"]


def _writable_v1_memory_cgroup() -> Path | None:
    if os.geteuid() != 0:
        return None
    own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                if "memory" in line.split(":")[1].split(",")), None)
    base = Path("/sys/fs/cgroup/memory")
    if own is None or not (base / "memory.limit_in_bytes").exists():
        return None
    parent = base / own.lstrip("/")
    return parent if parent.is_dir() and os.access(parent, os.W_OK) else None


@contextlib.contextmanager
def _v1_cgroup(tag: str, limit: int):
    """A fresh v1 memory cgroup nested under ours with `limit` bytes, removed afterwards; yields
    (its path, a preexec_fn that moves the child into it). Skips without root or a v1 hierarchy."""
    parent = _writable_v1_memory_cgroup()
    if parent is None:
        pytest.skip("needs root and a writable cgroup v1 memory hierarchy")
    group = parent / f"hypura-test-{tag}-{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup: {exc}")

    def join() -> None:  # runs in the child before exec
        (group / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield group, join
    finally:
        group.rmdir()


def test_real_v1_cgroup_limit_is_detected():
    """A child process placed in a fresh 1 GiB memory cgroup (nested under ours) detects 1 GiB total."""
    with _v1_cgroup("ram", GiB) as (group, join):
        code = "import json; from hypura_hardware.memory import ram_info; print(json.dumps(ram_info()))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             preexec_fn=join, check=True).stdout
        ram = json.loads(out)
    assert ram["total"] == GiB
    assert 0 < ram["available"] < GiB
    assert ram["cgroup"]["version"] == 1 and ram["cgroup"]["path"].endswith(group.name)
    assert ram["physical_total"] > GiB


def test_a_profile_cached_outside_a_cgroup_is_reused_inside_it(tmp_path):
    """A memory limit is not another machine: inside a 1 GiB cgroup the profile cached outside is still
    good (not re-measured: re-measuring allocates probe buffers, which a tight limit cannot afford),
    and its RAM figures are the cgroup's, read fresh."""
    from hypura_hardware import fingerprint, ram_info, write_cached

    from hypura_hardware.profile import VERSION

    devices = [{"name": "CPU", "description": "cpu", "type": "cpu", "memory_total": 1, "memory_free": 1}]
    cache = tmp_path / "profile.json"
    import time
    write_cached({"version": VERSION, "measured_at": time.time(), "ram": ram_info(), "gpu": None,
                  "devices": devices, "fingerprint": fingerprint(devices, ram_info()), "marker": "outside"}, cache)
    code = ("import json, sys; from hypura_hardware import load_or_measure; "
            "p = load_or_measure(devices=json.loads(sys.argv[2]), cache=__import__('pathlib').Path(sys.argv[1]), "
            "progress=False, log=lambda m: print('LOG', m, file=sys.stderr)); "
            "print(json.dumps({'marker': p.get('marker'), 'total': p['ram']['total']}))")
    with _v1_cgroup("profile", GiB) as (_, join):
        res = subprocess.run([sys.executable, "-c", code, str(cache), json.dumps(devices)], capture_output=True,
                             text=True, timeout=120, preexec_fn=join)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "re-measuring" not in res.stderr
    assert out == {"marker": "outside", "total": GiB}

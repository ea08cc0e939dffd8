"""Host RAM: total and available, honouring cgroup v1 and v2 memory limits.

Linux reads ``/proc/meminfo`` and every memory cgroup between the process's own cgroup and the
root of its hierarchy (``/proc/self/cgroup`` + ``/proc/self/mountinfo``). A limit anywhere on
that path binds, so::

    total     = min(MemTotal, every limit on the path)
    available = min(MemAvailable, every (limit - usage) on the path)

where ``usage`` excludes the cgroup's inactive file cache (``inactive_file`` in ``memory.stat``),
which the kernel reclaims before it OOM-kills — the same working-set rule as Docker and the kubelet.
All paths are taken relative to a ``root`` directory so tests can point the parser at a fake tree
of real files. macOS (best effort): ``sysctl hw.memsize`` and ``vm_stat``.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit.
UNLIMITED = 1 << 60


@dataclass(frozen=True)
class CgroupLevel:
    """One memory cgroup on the path from the process's cgroup to its hierarchy root."""

    version: int
    path: str  # the cgroup's path inside its hierarchy, e.g. "/user.slice/app"
    limit: int | None  # bytes; None = no limit
    usage: int  # bytes, inactive file cache excluded


def read_meminfo(root: Path = Path("/")) -> dict[str, int]:
    """``/proc/meminfo`` as a dict of bytes (``MemTotal``, ``MemAvailable``, ...)."""
    out: dict[str, int] = {}
    for line in (root / "proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
            out[key.strip()] = int(fields[0]) * scale
    return out


def _read_int(path: Path) -> int | None:
    """An integer file's value; None for "max", missing or unreadable files."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text.lstrip("-").isdigit():
        return None
    return int(text)


def _inactive_file(cgroup_dir: Path, version: int) -> int:
    try:
        text = (cgroup_dir / "memory.stat").read_text()
    except OSError:
        return 0
    stats = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
    # v1: total_inactive_file is hierarchical (includes children); v2's inactive_file already is.
    key = "total_inactive_file" if version == 1 and "total_inactive_file" in stats else "inactive_file"
    value = stats.get(key, "0")
    return int(value) if value.isdigit() else 0


def _mounts(root: Path) -> list[tuple[int, Path, str]]:
    """Memory cgroup mounts as (version, mount point under root, hierarchy path at the mount)."""
    found: list[tuple[int, Path, str]] = []
    try:
        lines = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        fstype, options = post_fields[0], post_fields[2].split(",")
        mount_point = root / fields[4].lstrip("/")
        if fstype == "cgroup" and "memory" in options:
            found.append((1, mount_point, fields[3]))
        elif fstype == "cgroup2":
            found.append((2, mount_point, fields[3]))
    if not lines:  # no mountinfo: the conventional places
        found = [(1, root / "sys/fs/cgroup/memory", "/"), (2, root / "sys/fs/cgroup", "/"),
                 (2, root / "sys/fs/cgroup/unified", "/")]
    return found


def _own_cgroups(root: Path) -> dict[int, str]:
    """The process's memory cgroup path per version, from ``/proc/self/cgroup``."""
    own: dict[int, str] = {}
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            own.setdefault(2, path)
        elif "memory" in controllers.split(","):
            own[1] = path
    return own


def _levels(version: int, mount: Path, mount_root: str, cg_path: str) -> list[CgroupLevel]:
    rel = cg_path
    if mount_root != "/" and (cg_path == mount_root or cg_path.startswith(mount_root + "/")):
        rel = cg_path[len(mount_root):] or "/"
    leaf = mount / rel.lstrip("/")
    if not leaf.is_dir():  # cgroup namespace: the mount itself is the process's cgroup
        leaf, rel = mount, "/"
    limit_file, usage_file = (("memory.limit_in_bytes", "memory.usage_in_bytes") if version == 1
                              else ("memory.max", "memory.current"))
    levels: list[CgroupLevel] = []
    node, path = leaf, str(Path(mount_root) / rel.lstrip("/"))
    while True:
        if (node / limit_file).exists() or (node / usage_file).exists():
            limit = _read_int(node / limit_file)
            if limit is not None and limit >= UNLIMITED:
                limit = None
            usage = _read_int(node / usage_file) or 0
            usage = max(0, usage - _inactive_file(node, version))
            levels.append(CgroupLevel(version, path or "/", limit, usage))
        if node == mount or mount not in node.parents:
            break
        node, path = node.parent, str(Path(path).parent)
    return levels


def cgroup_levels(root: Path = Path("/")) -> list[CgroupLevel]:
    """Every memory cgroup (v1 and v2) on the path from this process's cgroup to the root."""
    own = _own_cgroups(root)
    levels: list[CgroupLevel] = []
    seen: set[int] = set()
    for version, mount, mount_root in _mounts(root):
        if version in own and version not in seen and mount.is_dir():
            found = _levels(version, mount, mount_root, own[version])
            if found:
                levels.extend(found)
                seen.add(version)
    return levels


def linux_ram(root: Path = Path("/")) -> dict:
    """RAM ``total``/``available`` in bytes with the tightest cgroup limit, if any (Linux)."""
    meminfo = read_meminfo(root)
    physical = meminfo["MemTotal"]
    total = physical
    available = meminfo.get("MemAvailable", meminfo.get("MemFree", physical))
    limited = [level for level in cgroup_levels(root) if level.limit is not None]
    tightest = min(limited, key=lambda lv: lv.limit - lv.usage) if limited else None  # type: ignore[operator]
    if tightest is not None and tightest.limit is not None:
        total = min(total, *(level.limit for level in limited if level.limit is not None))
        available = min(available, max(0, tightest.limit - tightest.usage))
    cgroup = None if tightest is None else {
        "version": tightest.version, "path": tightest.path, "limit": tightest.limit, "usage": tightest.usage}
    return {"total": total, "available": min(available, total), "physical_total": physical,
            "cgroup": cgroup}


def macos_ram() -> dict:
    """RAM on macOS: ``hw.memsize`` and free + inactive + speculative pages from ``vm_stat``."""
    total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                               check=True).stdout.strip())
    text = subprocess.run(["vm_stat"], capture_output=True, text=True, check=True).stdout
    page = int(m.group(1)) if (m := re.search(r"page size of (\d+) bytes", text)) else 4096
    pages = {k.strip(): int(v.strip().rstrip(".")) for k, v in re.findall(r"^(Pages [^:]+):\s+(\d+)\.?$", text, re.M)}
    free = sum(pages.get(f"Pages {k}", 0) for k in ("free", "inactive", "speculative", "purgeable"))
    return {"total": total, "available": min(total, free * page), "physical_total": total, "cgroup": None}


def ram_info(root: Path = Path("/")) -> dict:
    """Host RAM for this process: ``total``, ``available``, ``physical_total`` (bytes), ``cgroup``."""
    if sys.platform == "darwin":
        return macos_ram()
    return linux_ram(root)


def _status_bytes(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None where there is none: not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """This process's resident set size now (Linux: ``VmRSS``; elsewhere the peak, an upper bound)."""
    now = _status_bytes("VmRSS")
    return peak_rss_bytes() if now is None else now


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process image. Not
    ``getrusage().ru_maxrss``: Linux carries that across ``execve``, so a child started from a
    large parent (a test runner holding a model) would report the parent's peak as its own.
    """
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

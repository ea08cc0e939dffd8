"""`hypura profile [--json] [--force]`: measure (or show the cached) hardware profile."""
from __future__ import annotations

import argparse
import datetime
import json
import sys

from ..config import load_config
from ..errors import USER_ERRORS
from .config import add_config_flags

GiB = 1 << 30


def _gb(n: float | None, unit: str = "GB/s") -> str:
    return "-" if n is None else f"{n / 1e9:.2f} {unit}"


def format_profile(p: dict) -> str:
    """A readable summary of a profile dict."""
    when = datetime.datetime.fromtimestamp(p["measured_at"]).strftime("%Y-%m-%d %H:%M")
    ram, disk, cpu, gpu = p["ram"], p["disk"], p["cpu"], p["gpu"]
    limit = ram.get("cgroup")
    lines = [f"{p['name']} ({p['host']}), measured {when}",
             f"cpu   {cpu['model']}, {cpu['cores']} cores, ~{cpu['flops'] / 1e9:.0f} GFLOP/s f32"
             + (f", decode reads {cpu['decode_bps'] / 1e9:.1f} GB/s of {cpu['decode']['type']} weights"
                if cpu.get("decode_bps") else ""),
             f"ram   {ram['total'] / GiB:.1f} GiB total, {ram['available'] / GiB:.1f} GiB available, "
             f"{_gb(ram['bandwidth'])}"
             + (f" (cgroup v{limit['version']} {limit['path']}: limit {limit['limit'] / GiB:.1f} GiB)" if limit else "")]
    if gpu:
        lines.append(f"gpu   {gpu['name']} ({gpu['description']}), {gpu['memory_total'] / GiB:.1f} GiB, "
                     f"{gpu['memory_free'] / GiB:.1f} GiB free, upload {_gb(p['upload_bps'])}")
    else:
        lines.append("gpu   none (the compute device is the CPU)")
    lines.append(f"disk  {disk['path']}: sequential {_gb(disk['seq_read_bps'])}, random {_gb(disk['rand_read_bps'])}"
                 + ("" if disk["direct_io"] else " (no direct I/O: page cache may have answered)"))
    for r in disk["reads"]:
        lines.append(f"        {r['kind']:<4} {r['block'] >> 10:>5} KiB  qd {r['qd']:>2}  {_gb(r['bps'])}")
    for d in p["devices"]:
        lines.append(f"device {d['name']} [{d['type']}] {d['description']}: "
                     f"{d['memory_free'] / GiB:.1f} / {d['memory_total'] / GiB:.1f} GiB free")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the profile, measuring it if there is no fresh cached one (or with ``--force``)."""
    from hypura_engine.decode_rate import measure_decode_bps
    from hypura_hardware import load_or_measure

    models_dir = load_config(vars(args)).models_dir
    try:
        profile = load_or_measure(models_dir, force=args.force, progress=not args.quiet,
                                  log=lambda m: print(m, file=sys.stderr), decode_rate=measure_decode_bps)
    except RuntimeError as exc:  # the native binding is not built
        print(f"hypura profile: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(profile, indent=2) if args.json else format_profile(profile))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `hypura profile`."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--force", action="store_true", help="re-measure even if the cached profile is fresh")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_flags(parser, ("models_dir",))
    parser.set_defaults(func=run, command="profile")


def register(subparsers) -> None:
    """Add `hypura profile`."""
    add_arguments(subparsers.add_parser("profile", help="measure devices, RAM, disk and upload bandwidth",
                                        description=__doc__))


def main(argv: list[str] | None = None) -> int:
    """`python -m hypura.commands.profile`: the same command without the dispatcher."""
    parser = argparse.ArgumentParser(prog="hypura profile", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except USER_ERRORS as exc:
        print(f"hypura profile: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

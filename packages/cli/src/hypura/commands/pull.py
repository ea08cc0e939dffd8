"""`hypura pull hf.co/OWNER/REPO[:QUANT] | https://.../file.gguf [--name NAME]`: download a GGUF (every shard of
a split set) into Hypura's models directory, resumable and verified, and register it under its name."""
from __future__ import annotations

import argparse
import sys


def pull_and_register(source: str, name: str | None = None, retries: int | None = None, bar: bool = True):
    """Run the pull with a tqdm bar per file on stderr; register the model; return (name, path, fetched files)."""
    from tqdm import tqdm

    from hypura_engine import Registry
    from hypura_hub import Pull

    registry = Registry()
    pull = Pull(source, registry.models_dir, **({} if retries is None else {"retries": retries}))
    current, bars = None, []
    try:
        for ev in pull.events():
            digest = ev.get("digest")
            if digest is None:
                continue
            if digest != current:
                if bars:
                    bars[-1].close()
                current = digest
                label = digest.removeprefix("sha256:")[:12]
                bars.append(tqdm(total=ev.get("total") or None, unit="B", unit_scale=True, unit_divisor=1024,
                                 desc=f"pulling {label}", file=sys.stderr, disable=not bar, leave=True))
            b = bars[-1]
            if ev.get("total") and b.total != ev["total"]:
                b.total = ev["total"]
            b.update(ev["completed"] - b.n)
    finally:
        for b in bars:
            b.close()
    assert pull.result is not None
    entry = registry.register(name or pull.result.name, pull.result.path)
    return entry, pull.result


def run(args: argparse.Namespace) -> int:
    from hypura_placement import format_size

    entry, result = pull_and_register(args.source, args.name, args.retries, bar=not args.quiet)
    for f in result.files:
        how = "sha256 verified" if f.verified else "size checked (the host publishes no sha256)"
        resumed = f", resumed at byte {f.resumed_from}" if f.resumed_from and f.downloaded else ""
        kept = ", already here" if not f.downloaded else ""
        print(f"{f.path.name}  {format_size(f.size)}  {how}{resumed}{kept}")
    print(f"pulled {entry.name} -> {entry.path}")
    print(f"run it: hypura run {entry.name}")
    return 0


def register(subparsers) -> None:
    """Add `hypura pull`."""
    p = subparsers.add_parser("pull", help="download a GGUF from Hugging Face (hf.co/OWNER/REPO[:QUANT]) or a URL",
                              description=__doc__)
    p.add_argument("source", metavar="NAME|URL", help="hf.co/OWNER/REPO[:QUANT] (default quant Q4_K_M) or an "
                   "https://.../model.gguf URL (a split set: the URL of its -00001-of-0000N shard)")
    p.add_argument("--name", default=None, help="register under this name (default: hf.co/owner/repo:quant, or the "
                   "file's stem)")
    p.add_argument("--retries", type=int, default=None, help="dropped connections resumed before giving up (default 3)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, command="pull")

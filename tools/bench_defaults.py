"""`hypura run FILE` as a newcomer runs it, inside a cgroup memory cap: no budget or context flags (or the ones
given after the file), caches dropped first; prints the run's mode, tok/s, fitted context, cache and peaks.

    .venv/bin/python tools/bench_defaults.py --cap 2G /var/tmp/hb/q3-skew0.8.gguf
    .venv/bin/python tools/bench_defaults.py --cap 2G /var/tmp/hb/q3-skew0.8.gguf --ram-budget 1.45G --ctx 512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, drop_caches  # noqa: E402

KEYS = ("mode", "eval_tps", "ctx", "ctx_reason", "cache_slots", "expert_cache_hit_rate", "stall_s",
        "unplanned_ram_bytes", "peak_rss_bytes", "predicted_tps")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", required=True, help="cgroup memory cap, e.g. 2G")
    ap.add_argument("-n", type=int, default=16, help="tokens to decode")
    ap.add_argument("model")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="further `hypura run` flags")
    args = ap.parse_args()
    from hypura.config import parse_size

    cap = MemoryCap(parse_size(args.cap))
    argv = [sys.executable, "-m", "hypura.main", "run", args.model, *args.extra, "--raw", "--temp", "0",
            "-n", str(args.n + 1), "-p", "The quick brown fox", "--json", "--no-warm-start"]
    try:
        drop_caches()
        p = subprocess.run(cap.wrap(argv), capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"failed (exit {p.returncode}): {p.stderr.strip()[-600:]}", file=sys.stderr)
            return 1
        out = {k: v for k, v in json.loads(lines[-1]).items() if k in KEYS}
        print(json.dumps({**out, "cgroup_peak_bytes": cap.peak(), "oom_killed": cap.oom_killed()}))
        return 0
    finally:
        cap.close()


if __name__ == "__main__":
    sys.exit(main())

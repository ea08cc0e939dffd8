"""`hypura run FILE` as a newcomer runs it, inside a cgroup memory cap: no budget or context flags (or the ones
given after the file), caches dropped first; prints the run's mode, tok/s, fitted context, cache and peaks.

    .venv/bin/python tools/bench_defaults.py --cap 2G /var/tmp/hb/q3-skew0.8.gguf
    .venv/bin/python tools/bench_defaults.py --cap 2G /var/tmp/hb/q3-skew0.8.gguf --ram-budget 1.45G --ctx 512
    .venv/bin/python tools/bench_defaults.py --cap 2G --rounds 3 --out sweep.json FILE -- --ram-budget 1.6G --ctx 512

With --rounds N the run is repeated (caches dropped, each run after the cores are idle, see bench_stream.py's
`measured`) and the median eval_tps printed; --out writes every run as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stream import measured  # noqa: E402
from benchlib import MemoryCap, drop_caches  # noqa: E402

KEYS = ("mode", "eval_tps", "ctx", "ctx_reason", "cache_slots", "expert_cache_hit_rate", "stall_s",
        "unplanned_ram_bytes", "peak_rss_bytes", "predicted_tps", "disk_gbps", "needed_bytes_per_token",
        "disk_bytes_per_token", "slots")


def run_once(cap_size: int, argv: list[str]) -> dict:
    cap = MemoryCap(cap_size)
    try:
        drop_caches()
        p = subprocess.run(cap.wrap(argv), capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {"ok": False, "error": f"exit {p.returncode}: {p.stderr.strip()[-600:]}",
                    "cgroup_peak_bytes": cap.peak(), "oom_killed": cap.oom_killed()}
        out = {k: v for k, v in json.loads(lines[-1]).items() if k in KEYS}
        return {"ok": True, **out, "cgroup_peak_bytes": cap.peak(), "oom_killed": cap.oom_killed()}
    finally:
        cap.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", required=True, help="cgroup memory cap, e.g. 2G")
    ap.add_argument("-n", type=int, default=16, help="tokens to decode")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quiet-wait", type=float, default=0, help="wait up to this long for idle cores before a run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("model")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="further `hypura run` flags")
    args = ap.parse_args()
    from hypura.config import parse_size

    extra = [x for x in args.extra if x != "--"]
    argv = [sys.executable, "-m", "hypura.main", "run", args.model, *extra, "--raw", "--temp", "0",
            "-n", str(args.n + 1), "-p", "The quick brown fox", "--json", "--no-warm-start"]
    runs = []
    for _ in range(args.rounds):
        res = measured(lambda: run_once(parse_size(args.cap), argv), args.quiet_wait)
        runs.append(res)
        print(json.dumps(res) if res["ok"] else f"failed ({res['error']})", file=sys.stdout if res["ok"] else sys.stderr,
              flush=True)
    tps = [r["eval_tps"] for r in runs if r["ok"]]
    summary = {"model": args.model, "cap": args.cap, "flags": extra, "n": args.n, "runs": runs,
               "median_tps": statistics.median(tps) if tps else None}
    if args.rounds > 1:
        print(json.dumps({"flags": extra, "median_tps": summary["median_tps"], "tps": tps}))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0 if tps else 1


if __name__ == "__main__":
    sys.exit(main())

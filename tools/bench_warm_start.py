#!/usr/bin/env python3
"""Expert-cache warm start on the CPU box: cold (`--no-warm-start`) and warm runs of `hypura run
--mode expert-stream`, alternating, each alone in the same cgroup cap with the page cache dropped.
The stored routing statistics of the model are deleted first, so the first cold run writes them.

    .venv/bin/python tools/bench_warm_start.py --model /var/tmp/hb/mixtral-8l-skew0.8.gguf --cap 3G \\
        --out docs/bench/moe-cpu-warm-start.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, drop_caches, run_hypura  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--cap", default="3G", help="cgroup memory cap; Hypura's RAM budget is the cap minus 600M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from hypura_engine.routing_stats import stats_path
    from hypura_placement import parse_size

    cap_b = parse_size(args.cap)
    stats_path(args.model).unlink(missing_ok=True)
    rows = []
    for r in range(args.rounds):
        for warm in (False, True):
            drop_caches()
            cap = MemoryCap(cap_b)
            try:
                res = run_hypura(args.model, cap, args.n, args.threads,
                                 ["--mode", "expert-stream", "--ram-budget", str(cap_b - (600 << 20)), "--ctx", "512",
                                  *(() if warm else ("--no-warm-start",))])
            finally:
                cap.close()
            row = {"round": r, "warm": warm, "tps": res.get("tps"), "hit": res.get("expert_cache_hit_rate"),
                   "disk_bytes_per_token": res.get("disk_bytes_per_token"),
                   "warm_start_experts": res.get("warm_start_experts"), "warm_start_s": res.get("warm_start_s"),
                   "load_s": res.get("load_s"), "error": res.get("error", "")[-200:]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Streaming under a RAM cap: Hypura (dense-FFN or expert streaming) vs llama-bench (mmap, dio), and vs the disk.

The same model, the same cgroup memory cap around each program, caches dropped before every run
(cold), runs interleaved round by round; medians. Hypura's physical limit is the measured
O_DIRECT bandwidth of the model's disk ÷ the bytes that must come from disk per token: for expert
streaming the experts a decoded token needed and did not hold (`needed_bytes_per_token`: cache misses
and prefetched experts; wrong guesses excluded, so they count against Hypura), else all bytes read.

    sudo .venv/bin/python tools/bench_stream.py --model llama3-70b-12l.gguf --cap 4G --rounds 3 -n 8 \
        --out docs/bench/dense-cpu.json
    sudo .venv/bin/python tools/bench_stream.py --mode expert-stream --model mixtral-8l.gguf --cap 3G ...

For MoE models the routing histogram Hypura measured (distinct experts per layer, share of the
top 10%) and the expert-cache hit rate are printed next to tok/s (DESIGN.md "Routing caveat").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, disk_bandwidth, drop_caches, median, run_hypura, run_llama_bench, tree_env  # noqa: E402


def parse_size(s: str) -> int:
    from hypura.config import parse_size as ps

    return ps(s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--cap", required=True, help="cgroup memory cap for every program, e.g. 4G")
    ap.add_argument("--ram-budget", default=None, help="Hypura's RAM budget (default: cap minus 600M)")
    ap.add_argument("--mode", default="dense-stream", choices=("dense-stream", "expert-stream"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=8, help="tokens decoded per run")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--configs", default="hypura,mmap,mmap-nr,dio")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--warm-start", action="store_true",
                    help="let Hypura seed its expert cache from earlier runs' routing statistics (default: "
                         "off, so every round starts cold like the page cache)")
    ap.add_argument("--before-tree", type=Path, default=None,
                    help="another checkout (binding built) whose Hypura runs as config 'hypura-before', interleaved "
                         "with this one: today's code against an earlier commit, side by side")
    args = ap.parse_args()
    cap_bytes = parse_size(args.cap)
    budget = args.ram_budget or str(cap_bytes - (600 << 20))
    size = args.model.stat().st_size
    drop_caches()
    bw = disk_bandwidth(args.model)
    print(f"model {args.model.name}: {size / 1e9:.2f} GB, cap {cap_bytes / 2**30:.2f} GiB "
          f"({size / cap_bytes:.2f}x), disk {bw / 1e9:.2f} GB/s (O_DIRECT, sequential)", flush=True)
    hypura_args = ["--mode", args.mode, "--ram-budget", budget, "--ctx", "512",
                   *(() if args.warm_start else ("--no-warm-start",))]
    configs = {
        "hypura": lambda cap: run_hypura(args.model, cap, args.n, args.threads, hypura_args),
        "hypura-before": lambda cap: run_hypura(args.model, cap, args.n, args.threads, hypura_args,
                                                env=tree_env(args.before_tree) if args.before_tree else None),
        "hypura-prefetch": lambda cap: run_hypura(args.model, cap, args.n, args.threads, [*hypura_args, "--prefetch"]),
        "mmap": lambda cap: run_llama_bench(args.model, cap, args.n, args.threads, ["-ngl", "0", "-lm", "mmap"]),
        "dio": lambda cap: run_llama_bench(args.model, cap, args.n, args.threads, ["-ngl", "0", "-lm", "dio"]),
        # without weight repacking, mmap'd weights stay page cache (repacked ones are anonymous memory)
        "mmap-nr": lambda cap: run_llama_bench(args.model, cap, args.n, args.threads,
                                               ["-ngl", "0", "-lm", "mmap", "--repack", "0"]),
    }
    chosen = [c for c in args.configs.split(",") if c]
    runs: dict[str, list[dict]] = {c: [] for c in chosen}
    disk = []
    for r in range(args.rounds):
        drop_caches()
        before = disk_bandwidth(args.model)
        round_runs = {}
        for name in chosen:
            drop_caches()
            cap = MemoryCap(cap_bytes)
            try:
                res = configs[name](cap)
                res["cgroup_peak_bytes"] = cap.peak()
            finally:
                cap.close()
            runs[name].append(res)
            round_runs[name] = res
            tps = f"{res['tps']:.4f} tok/s" if res["ok"] else res["error"][:120]
            print(f"round {r} {name:7s} {tps}  (wall {res['wall_s']:.1f} s, peak {res['cgroup_peak_bytes']})",
                  flush=True)
        drop_caches()
        after = disk_bandwidth(args.model)
        disk.append({"before": before, "after": after, "mean": (before + after) / 2})
        ratios = []
        for name, hy_r in round_runs.items():
            if name.startswith("hypura") and hy_r["ok"]:
                limit_r = disk[-1]["mean"] / (hy_r.get("needed_bytes_per_token") or hy_r["disk_bytes_per_token"])
                hy_r["physical_limit_tps"] = limit_r
                hy_r["over_limit"] = hy_r["tps"] / limit_r
                ratios.append(f"{name} / physical limit = {hy_r['over_limit']:.3f}")
        print(f"round {r} disk    {before / 1e9:.3f} / {after / 1e9:.3f} GB/s before/after (O_DIRECT, 16 x 16 MiB)"
              + "".join(f"; {x}" for x in ratios), flush=True)
    summary = {name: median([x["tps"] for x in rs]) for name, rs in runs.items()}
    hy = [x for x in runs.get("hypura", []) if x["ok"]]
    per_token = median([x.get("disk_bytes_per_token") for x in hy])
    needed = median([x.get("needed_bytes_per_token") or x.get("disk_bytes_per_token") for x in hy])
    limit = median([x.get("physical_limit_tps") for x in hy])
    result = {
        "before_tree": str(args.before_tree) if args.before_tree else None,
        "benchmark": args.mode, "model": str(args.model), "model_bytes": size, "cap_bytes": cap_bytes,
        "ram_budget": budget, "n": args.n, "threads": args.threads, "disk_bps": bw, "disk_bps_rounds": disk,
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs, "median_tps": summary,
        "hypura_disk_bytes_per_token": per_token, "hypura_needed_bytes_per_token": needed,
        "physical_limit_tps": limit, "hypura_over_limit": median([x.get("over_limit") for x in hy]),
        "over_limit": {name: median([x["over_limit"] for x in rs if x["ok"]]) for name, rs in runs.items()
                       if name.startswith("hypura") and any(x["ok"] for x in rs)},
        "hypura_over_llama": {k: (summary["hypura"] / v if v and summary.get("hypura") else None)
                              for k, v in summary.items() if k != "hypura"},
    }
    if hy and "expert_cache_hit_rate" in hy[0]:
        result["expert_cache_hit_rate"] = median([x["expert_cache_hit_rate"] for x in hy])
        result["io_saved_fraction"] = median([x["io_saved_fraction"] for x in hy])
        result["routing"] = hy[-1].get("routing")
        result["prefetch"] = hy[-1].get("prefetch")
    print(json.dumps({k: result.get(k) for k in ("median_tps", "physical_limit_tps", "hypura_over_limit", "over_limit",
                                                 "hypura_over_llama", "hypura_disk_bytes_per_token",
                                                 "hypura_needed_bytes_per_token", "expert_cache_hit_rate",
                                                 "io_saved_fraction", "prefetch", "routing")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

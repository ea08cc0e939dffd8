#!/usr/bin/env python3
"""Side by side: the same `hypura run` in several configurations (environments, other checkouts, extra flags),
interleaved round by round under one cgroup cap, page cache dropped before every run; medians.

A configuration is `NAME=ENV@TREE#FLAGS`: ENV is `K:V;K:V` (environment variables), TREE another checkout whose
packages run instead of this one (its binding built), FLAGS comma-separated extra arguments. Everything after
the second `--` goes to every run.

    sudo .venv/bin/python tools/bench_ab.py /var/tmp/hb/q3-skew0.8.gguf --cap 2G --rounds 5 -n 32 --out ab.json \\
        -- before=@/tmp/wt-65f42f0 now=HYPURA_REPACKED_DIR:/var/tmp/hb/repacked \\
        -- --mode expert-stream --ram-budget 1.45G --ctx 512 --no-warm-start
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, disk_bandwidth, drop_caches, run_hypura, tree_env  # noqa: E402


def parse_config(spec: str) -> tuple[str, dict, list[str]]:
    name, _, rest = spec.partition("=")
    rest, _, flags = rest.partition("#")
    envs, _, tree = rest.partition("@")
    env = tree_env(Path(tree)) if tree else dict(os.environ)
    for kv in filter(None, envs.split(";")):
        k, _, v = kv.partition(":")
        env[k] = v
    return name, env, [a for a in flags.split(",") if a]


def main() -> int:
    argv = sys.argv[1:]
    if argv.count("--") != 2:
        print(__doc__)
        return 2
    i = argv.index("--")
    j = argv.index("--", i + 1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--cap", default="0", help="cgroup memory cap, e.g. 2G (0: none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv[:i])
    from hypura.config import parse_size

    cap_bytes = parse_size(a.cap) if a.cap != "0" else 0
    configs = [parse_config(c) for c in argv[i + 1:j]]
    extra = argv[j + 1:]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    disk = []
    for r in range(a.rounds):
        drop_caches()
        disk.append(disk_bandwidth(a.model, nbytes=2 << 30))
        for name, env, flags in configs:
            drop_caches()
            cap = MemoryCap(cap_bytes) if cap_bytes else None
            try:
                x = run_hypura(a.model, cap, a.n, a.threads, extra + flags, env=env)
                x["cgroup_peak_bytes"] = cap.peak() if cap else None
            finally:
                if cap:
                    cap.close()
            x.pop("routing", None)
            runs[name].append(x)
            print(f"round {r} disk {disk[-1] / 1e9:.2f} GB/s {name:12s} "
                  + (f"{x['tps']:.3f} tok/s stall {x.get('stall_s')} hit {x.get('expert_cache_hit_rate')}"
                     if x["ok"] else x["error"][-200:]), flush=True)
    medians = {name: statistics.median([x["tps"] for x in xs if x["ok"]]) if any(x["ok"] for x in xs) else None
               for name, xs in runs.items()}
    print(json.dumps({"median_tps": medians, "tps": {n: [x["tps"] for x in xs] for n, xs in runs.items()}}))
    if a.out:
        a.out.write_text(json.dumps({"model": str(a.model), "cap_bytes": cap_bytes, "n": a.n, "threads": a.threads,
                                     "configs": argv[i + 1:j], "args": extra, "disk_bps": disk, "runs": runs,
                                     "median_tps": medians}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

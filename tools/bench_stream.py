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

Beside the disk limit, the roofline of issue 18: `1 / max(t_disk, t_compute)` per token, `t_disk` = the bytes a
decoded token needed ÷ the round's O_DIRECT probe, `t_compute` = the same file fully resident, warm, no cap, same
threads (`hypura run FILE --mode resident --ctx 512 -n 33`, measured once at the start where the file fits RAM;
`--resident-tps` gives it; else the planner's compute term). Every Hypura run also gets its plan's prediction
(`predicted_tps` ÷ measured); config `defaults` is `hypura run FILE` with no budget, context or mode flags.

For MoE models the routing histogram Hypura measured (distinct experts per layer, share of the
top 10%) and the expert-cache hit rate are printed next to tok/s (DESIGN.md "Routing caveat").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, disk_bandwidth, drop_caches, median, run_hypura, run_llama_bench, tree_env  # noqa: E402


def parse_size(s: str) -> int:
    from hypura.config import parse_size as ps

    return ps(s)


def cpu_busy_s() -> float:
    """CPU-seconds all cores have been busy since boot (/proc/stat: user, nice, system, irq, softirq)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to max_wait s) until the box is idle (< threshold cores busy over 2 s): other workers share the two
    cores. Returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        b0 = cpu_busy_s()
        time.sleep(2)
        if (cpu_busy_s() - b0) / 2 < threshold or time.perf_counter() - t0 > max_wait:
            return time.perf_counter() - t0


def measured(fn, quiet_wait: float) -> dict:
    """fn()'s result with `quiet_wait_s` (waited for an idle box first) and `other_cpu_s`: CPU-seconds the box
    spent during the run beyond the run's own process (other workers' jobs; kernel I/O threads count too)."""
    waited = wait_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    b0, c0 = cpu_busy_s(), children_cpu_s()
    res = fn()
    res["other_cpu_s"] = round(cpu_busy_s() - b0 - (children_cpu_s() - c0), 2)
    res["quiet_wait_s"] = round(waited, 1)
    return res


def warm_page_cache(path: Path, block: int = 16 << 20) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(block):
            pass


def token_ms(res: dict, t_compute: float) -> dict | None:
    """Where a decoded token's time went (ms): the resident file's compute, the waits for reads, the decode
    thread's own Python at the splits, and the rest (splits, the reads' CPU time beside compute, sampling)."""
    passes = res.get("decode_passes")
    if not passes or "decode_callback_s" not in res or not res.get("tps"):
        return None
    total, stall, py = 1e3 / res["tps"], 1e3 * res["decode_stall_s"] / passes, 1e3 * res["decode_callback_s"] / passes
    return {"total": round(total, 2), "compute": round(1e3 * t_compute, 2), "stall": round(stall, 2),
            "callbacks": round(py, 2), "rest": round(total - 1e3 * t_compute - stall - py, 2)}


def resident_compute(model: Path, threads: int, n: int = 33, quiet_wait: float = 0.0) -> dict:
    """t_compute: `hypura run FILE --mode resident --ctx 512 -n N`, no cap, after reading the file into the page
    cache (warm); its eval_tps."""
    warm_page_cache(model)
    res = measured(lambda: run_hypura(model, None, n - 1, threads,
                                      ["--mode", "resident", "--ctx", "512", "--no-warm-start"]), quiet_wait)
    if not res["ok"]:
        raise SystemExit(f"resident run failed: {res['error']}")
    return {"tps": res["tps"], "source": f"hypura run --mode resident --ctx 512 -n {n}, warm, no cap",
            "prompt_tps": res.get("prompt_tps"), "load_s": res.get("load_s"), "other_cpu_s": res["other_cpu_s"],
            "quiet_wait_s": res["quiet_wait_s"], "wall_s": res["wall_s"]}


def plan_prediction(model: Path, budget: str, mode: str, routing: bool = False) -> dict:
    """`hypura plan FILE --ram-budget B --ctx 512 --json`: without routing statistics (as the runs start cold), or
    with those the runs recorded (`routing`: what `hypura plan` predicts for a MoE file once it has run)."""
    argv = [sys.executable, "-m", "hypura.main", "plan", str(model), "--ram-budget", budget, "--ctx", "512",
            "--gpu-budget", "0", *(() if routing else ("--no-routing-stats",)), "--json"]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-400:]}
    plan = json.loads(p.stdout[p.stdout.index("{"):])
    return {k: plan.get(k) for k in ("mode", "predicted_tps", "predicted_tps_serial", "bottleneck",
                                     "seconds_per_token", "nvme_bytes_per_token", "n_slots", "slot_bytes")} | {
        "expert_cache": {k: plan.get("expert_cache", {}).get(k) for k in ("experts", "hit_rate", "expert_bytes")},
        "plan_mode_matches": (plan.get("mode") or "").startswith(mode.removesuffix("-stream"))}


def timed_llama_bench(model: Path, cap, n: int, threads: int, extra: list[str], timeout: float) -> dict:
    """llama-bench, stopped after `timeout` s (a configuration thrashing at the cap is reported as such)."""
    t0 = time.perf_counter()
    try:
        return run_llama_bench(model, cap, n, threads, extra, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "tps": None, "wall_s": time.perf_counter() - t0,
                "error": f"stopped after {timeout:.0f} s (thrashing at the cap)"}


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
    ap.add_argument("--resident-tps", type=float, default=None,
                    help="t_compute as tok/s of the fully resident file (default: measured once at the start where "
                         "the file fits in half the RAM, else the planner's compute term)")
    ap.add_argument("--resident-source", default="--resident-tps", help="where --resident-tps comes from (recorded)")
    ap.add_argument("--resident-only", action="store_true",
                    help="only measure t_compute (the resident run) and print it as JSON")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="before each timed run, wait up to this many seconds for the cores to be idle (0: do not)")
    ap.add_argument("--llama-timeout", type=float, default=300, help="seconds before a llama-bench run is stopped")
    args = ap.parse_args()
    if args.resident_only:
        print(json.dumps({"model": str(args.model), "threads": args.threads,
                          **resident_compute(args.model, args.threads, quiet_wait=args.quiet_wait)}), flush=True)
        return 0
    cap_bytes = parse_size(args.cap)
    budget = args.ram_budget or str(cap_bytes - (600 << 20))
    size = args.model.stat().st_size
    drop_caches()
    bw = disk_bandwidth(args.model)
    print(f"model {args.model.name}: {size / 1e9:.2f} GB, cap {cap_bytes / 2**30:.2f} GiB "
          f"({size / cap_bytes:.2f}x), disk {bw / 1e9:.2f} GB/s (O_DIRECT, sequential)", flush=True)
    compute = None
    if args.resident_tps:
        compute = {"tps": args.resident_tps, "source": args.resident_source}
    elif size < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2:
        compute = resident_compute(args.model, args.threads, quiet_wait=args.quiet_wait)
    plan = plan_prediction(args.model, budget, args.mode)
    if compute is None:
        t = (plan.get("seconds_per_token") or {}).get("compute")
        compute = {"tps": 1 / t if t else None, "source": "planner's compute term"}
    print(f"t_compute: {compute['tps']:.3f} tok/s ({compute['source']}); plan: {plan.get('mode')}, predicted "
          f"{plan.get('predicted_tps')} tok/s", flush=True)
    hypura_args = ["--mode", args.mode, "--ram-budget", budget, "--ctx", "512",
                   *(() if args.warm_start else ("--no-warm-start",))]
    configs = {
        "hypura": lambda cap: run_hypura(args.model, cap, args.n, args.threads, hypura_args),
        "hypura-before": lambda cap: run_hypura(args.model, cap, args.n, args.threads, hypura_args,
                                                env=tree_env(args.before_tree) if args.before_tree else None),
        "defaults": lambda cap: run_hypura(args.model, cap, args.n, args.threads, ["--no-warm-start"]),
        "hypura-prefetch": lambda cap: run_hypura(args.model, cap, args.n, args.threads, [*hypura_args, "--prefetch"]),
        "mmap": lambda cap: timed_llama_bench(args.model, cap, args.n, args.threads, ["-ngl", "0", "-lm", "mmap"],
                                              args.llama_timeout),
        "dio": lambda cap: timed_llama_bench(args.model, cap, args.n, args.threads, ["-ngl", "0", "-lm", "dio"],
                                             args.llama_timeout),
        # without weight repacking, mmap'd weights stay page cache (repacked ones are anonymous memory)
        "mmap-nr": lambda cap: timed_llama_bench(args.model, cap, args.n, args.threads,
                                                 ["-ngl", "0", "-lm", "mmap", "--repack", "0"], args.llama_timeout),
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
                res = measured(lambda: configs[name](cap), args.quiet_wait)
                res["cgroup_peak_bytes"] = cap.peak()
            finally:
                cap.close()
            runs[name].append(res)
            round_runs[name] = res
            tps = f"{res['tps']:.4f} tok/s" if res["ok"] else res["error"][:120]
            if res["ok"] and "stall_s" in res:
                tps += (f" stall {res['stall_s']:.2f} s, reader {res.get('disk_gbps')} GB/s, hit "
                        f"{res.get('expert_cache_hit_rate', '-')}, predicted {res.get('predicted_tps')}")
            print(f"round {r} {name:7s} {tps}  (wall {res['wall_s']:.1f} s, peak {res['cgroup_peak_bytes']}, other "
                  f"CPU {res['other_cpu_s']} s, waited {res['quiet_wait_s']} s for idle cores)",
                  flush=True)
        drop_caches()
        after = disk_bandwidth(args.model)
        disk.append({"before": before, "after": after, "mean": (before + after) / 2})
        ratios = []
        for name, hy_r in round_runs.items():
            if (name.startswith("hypura") or name == "defaults") and hy_r["ok"]:
                needed = hy_r.get("needed_bytes_per_token") or hy_r.get("disk_bytes_per_token") or 0
                limit_r = disk[-1]["mean"] / needed if needed else None
                hy_r["physical_limit_tps"] = limit_r
                hy_r["over_limit"] = hy_r["tps"] / limit_r if limit_r else None
                t_disk = needed / disk[-1]["mean"]
                t_compute = 1 / compute["tps"] if compute["tps"] else 0.0
                hy_r["t_disk_s"], hy_r["t_compute_s"] = t_disk, t_compute
                hy_r["roofline_tps"] = 1 / max(t_disk, t_compute)
                hy_r["hypura_over_roofline"] = hy_r["tps"] / hy_r["roofline_tps"]
                hy_r["predicted_over_measured"] = (hy_r["predicted_tps"] / hy_r["tps"]
                                                   if hy_r.get("predicted_tps") else None)
                hy_r["token_ms"] = token_ms(hy_r, t_compute)
                ms = hy_r["token_ms"]
                ratios.append(f"{name} / physical limit = {hy_r['over_limit'] or 0:.3f}, / roofline = "
                              f"{hy_r['hypura_over_roofline']:.3f} (t_disk {t_disk * 1e3:.1f} ms, t_compute "
                              f"{t_compute * 1e3:.1f} ms)" + (f", a token {ms['total']} ms = compute {ms['compute']} + "
                              f"stall {ms['stall']} + callbacks {ms['callbacks']} + rest {ms['rest']}" if ms else ""))
        print(f"round {r} disk    {before / 1e9:.3f} / {after / 1e9:.3f} GB/s before/after (O_DIRECT, 16 x 16 MiB)"
              + "".join(f"; {x}" for x in ratios), flush=True)
    summary = {name: median([x["tps"] for x in rs]) for name, rs in runs.items()}
    routed = plan_prediction(args.model, budget, args.mode, routing=True) if args.mode == "expert-stream" else None
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
        "t_compute": compute, "plan": plan,
        "t_disk_s": median([x.get("t_disk_s") for x in hy]),
        "roofline_tps": median([x.get("roofline_tps") for x in hy]),
        "hypura_over_roofline": median([x.get("hypura_over_roofline") for x in hy]),
        "predicted_tps": median([x.get("predicted_tps") for x in hy]),
        "predicted_over_measured": median([x.get("predicted_over_measured") for x in hy]),
        "plan_with_routing": routed,
        "plan_with_routing_over_measured": (routed["predicted_tps"] / summary["hypura"] if routed and
                                            routed.get("predicted_tps") and summary.get("hypura") else None),
        "llama_best": max(((k, v) for k, v in summary.items() if k in ("mmap", "mmap-nr", "dio") and v),
                          key=lambda kv: kv[1], default=(None, None)),
    }
    if summary.get("defaults") and summary.get("hypura"):
        result["defaults_over_hypura"] = summary["defaults"] / summary["hypura"]
    if hy and "expert_cache_hit_rate" in hy[0]:
        result["expert_cache_hit_rate"] = median([x["expert_cache_hit_rate"] for x in hy])
        result["io_saved_fraction"] = median([x["io_saved_fraction"] for x in hy])
        result["routing"] = hy[-1].get("routing")
        result["prefetch"] = hy[-1].get("prefetch")
        parts = [x["token_ms"] for x in hy if x.get("token_ms")]
        result["token_ms"] = {k: median([p[k] for p in parts]) for k in parts[0]} if parts else None
    print(json.dumps({k: result.get(k) for k in ("median_tps", "physical_limit_tps", "hypura_over_limit", "over_limit",
                                                 "roofline_tps", "hypura_over_roofline", "t_disk_s", "predicted_tps",
                                                 "predicted_over_measured", "plan_with_routing_over_measured",
                                                 "llama_best", "defaults_over_hypura",
                                                 "hypura_over_llama", "hypura_disk_bytes_per_token",
                                                 "hypura_needed_bytes_per_token", "expert_cache_hit_rate",
                                                 "io_saved_fraction", "token_ms", "prefetch", "routing")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

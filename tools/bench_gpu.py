#!/usr/bin/env python3
"""GPU rows of docs/BENCHMARKS.md (run on the lent H100 after tools/device_setup.sh).

Row `resident`: a model that fits; `hypura run --mode resident` decode and prefill tok/s vs
llama-bench tg/pp on the same build, interleaved rounds, medians.
Row `dense`: a dense model under a GPU budget and a cgroup RAM cap; Hypura's plan (dense-FFN
streaming) vs llama-bench with -ngl chosen to fill the same GPU budget (mmap and dio) under the
same cap, caches dropped before every run; Hypura ÷ physical limit (disk GB/s ÷ disk bytes/token).
Row `moe`: the same for a MoE model (expert streaming) against llama.cpp's MoE recipes.

    python3 tools/bench_gpu.py resident --model q14.gguf --rounds 3 --out $OUT/resident.json
    python3 tools/bench_gpu.py dense --model l70.gguf --gpu-budget 2G --cap 4G --ngl 3 -n 16 --out ...
    python3 tools/bench_gpu.py moe --model mx.gguf --gpu-budget 2G --cap 4G --n-cpu-moe 6 -n 24 --out ...
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (LLAMA_BENCH, MemoryCap, disk_bandwidth, drop_caches, median,  # noqa: E402
                      run_hypura, run_llama_bench)


def size(s: str) -> int:
    from hypura_placement import parse_size

    return parse_size(s)


def llama_bench_pp(model: Path, n_prompt: int) -> float:
    out = subprocess.run([str(LLAMA_BENCH), "-m", str(model), "-p", str(n_prompt), "-n", "0", "-r", "1",
                          "-ngl", "99", "-o", "json"], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def hypura_resident(model: Path, n_prompt: int, n_gen: int) -> tuple[float, float]:
    """(prefill tok/s of an n_prompt-token prompt, decode tok/s) through the engine's Runner after a
    warm-up generation (llama-bench warms up too)."""
    from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions

    runner = Runner(model, LoadOptions(mode="resident", ctx=1024))
    greedy = SamplingOptions(temperature=0)
    try:
        def gen(tokens, n):
            runner.cached = []
            runner.ctx.clear()
            return list(runner.generate(tokens, GenerateOptions(num_predict=n, sampling=greedy)))[-1]

        gen(runner.tokenize("warm up"), 4)
        prompt = (runner.tokenize("word " * n_prompt) + [1] * n_prompt)[:n_prompt]
        pp = gen(prompt, 1).prompt_tps
        res = gen(runner.tokenize("The quick brown fox"), n_gen + 1)
        return pp, res.eval_tps
    finally:
        runner.close()


def resident(args) -> dict:
    rows = []
    for r in range(args.rounds):
        lb = run_llama_bench(args.model, None, args.n, 16, ["-ngl", "99"])
        lbp = llama_bench_pp(args.model, 512)
        hyp, hyt = hypura_resident(args.model, 512, args.n)
        rows.append({"llama_bench_tg": lb["tps"], "hypura_tg": hyt, "llama_bench_pp512": lbp, "hypura_pp512": hyp})
        print(f"round {r}: tg llama-bench {lb['tps']:.1f} hypura {hyt:.1f} | pp512 llama-bench {lbp:.0f} "
              f"hypura {hyp:.0f}", flush=True)
    med = {k: median([x[k] for x in rows]) for k in rows[0]}
    med["tg_ratio"] = med["hypura_tg"] / med["llama_bench_tg"]
    med["pp_ratio"] = med["hypura_pp512"] / med["llama_bench_pp512"]
    return {"rounds": rows, "median": med}


def streaming_row(args, llama_configs: dict[str, list[str]]) -> dict:
    """Hypura (plan under --gpu-budget and the cap) against each llama-bench configuration, all under the
    same cgroup RAM cap, page cache dropped before every run; rounds interleave the programs."""
    cap_b = size(args.cap)
    runs: dict[str, list] = {"hypura": [], **({"hypura-prefetch": []} if args.also_prefetch else {}),
                             **{name: [] for name in llama_configs}}
    disk = []
    # RAM budget: the cap minus what a CUDA process holds outside the plan (context, cuBLAS, Python).
    ram_budget = cap_b - size(args.host_overhead)
    # Measure and cache the hardware profile first, outside the cap: a run that had to measure it
    # would do so inside the cap (the bandwidth probes allocate buffers) and be OOM-killed.
    subprocess.run([sys.executable, "-m", "hypura.main", "profile"], check=True, capture_output=True)
    for r in range(args.rounds):
        drop_caches()
        disk.append(disk_bandwidth(args.model))
        for name in runs:
            drop_caches()
            cap = MemoryCap(cap_b)
            try:
                if name.startswith("hypura"):
                    res = run_hypura(args.model, cap, args.n, 16, ["--mode", "auto", "--gpu-budget", args.gpu_budget,
                                                                 "--ram-budget", str(ram_budget), "--ctx", "512",
                                                                 "--no-warm-start",
                                                                 *(["--prefetch"] if name == "hypura-prefetch" else [])],
                                     timeout=args.timeout)
                else:
                    res = run_llama_bench(args.model, cap, args.n, 16, llama_configs[name], timeout=args.timeout)
                res["cgroup_peak_bytes"] = cap.peak()
            except subprocess.TimeoutExpired:
                res = {"ok": False, "tps": None, "error": f"timed out after {args.timeout} s"}
            finally:
                cap.close()
            runs[name].append(res)
            extra = ""
            if name.startswith("hypura") and res["ok"]:
                extra = (f" disk {res.get('disk_bytes_per_token', 0) / 1e9:.2f} GB/tok, needed "
                         f"{(res.get('needed_bytes_per_token') or res.get('disk_bytes_per_token', 0)) / 1e9:.2f}, hit "
                         f"{res.get('expert_cache_hit_rate', '-')}, ram hit {res.get('ram_cache_hit_rate', '-')}")
            print(f"round {r} {name:12s} " + (f"{res['tps']:.3f} tok/s{extra}" if res["ok"] else res["error"][:160]),
                  flush=True)
    hy = [x for x in runs["hypura"] if x["ok"]]
    per_token = median([x.get("disk_bytes_per_token") for x in hy])
    # the limit's denominator: what must come from disk per decoded token (MoE: the experts needed and not held)
    needed = median([x.get("needed_bytes_per_token") or x.get("disk_bytes_per_token") for x in hy])
    bw = median(disk)
    limit = bw / needed if needed else None
    med = {k: median([x["tps"] for x in v]) for k, v in runs.items()}
    best = max((k for k in llama_configs if med[k]), key=lambda k: med[k], default=None)
    return {"runs": runs, "llama_configs": llama_configs, "disk_bps": disk, "median_tps": med,
            "disk_bytes_per_token": per_token, "needed_bytes_per_token": needed, "physical_limit_tps": limit,
            "hypura_over_limit": (med["hypura"] / limit) if limit and med["hypura"] else None,
            "llama_best": best, "hypura_over_llama_best": (med["hypura"] / med[best]) if best and med["hypura"] else None,
            "expert_cache_hit_rate": median([x.get("expert_cache_hit_rate") for x in hy]),
            "ram_cache_hit_rate": median([x.get("ram_cache_hit_rate") for x in hy]),
            "prefetch": [x.get("prefetch") for x in runs.get("hypura-prefetch", []) if x["ok"]]}


def dense(args) -> dict:
    ngl = str(args.ngl)
    return streaming_row(args, {"ngl-mmap": ["-ngl", ngl, "-lm", "mmap"], "ngl-dio": ["-ngl", ngl, "-lm", "dio"]})


def moe(args) -> dict:
    """llama.cpp's MoE offload recipes: every expert in host memory (`-ot exps=CPU`), or the experts of
    the first layers on the GPU within the budget (`--n-cpu-moe`), mmap and dio."""
    ncm = str(args.n_cpu_moe)
    return streaming_row(args, {
        "ot-exps-mmap": ["-ngl", "99", "-ot", "exps=CPU", "-lm", "mmap"],
        "ncmoe-mmap": ["-ngl", "99", "--n-cpu-moe", ncm, "-lm", "mmap"],
        "ncmoe-dio": ["-ngl", "99", "--n-cpu-moe", ncm, "-lm", "dio"],
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", choices=("resident", "dense", "moe"))
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--gpu-budget", default="6G")
    ap.add_argument("--cap", default="8G")
    ap.add_argument("--ngl", type=int, default=10, help="dense row: llama.cpp layers on the GPU")
    ap.add_argument("--n-cpu-moe", type=int, default=6, help="moe row: llama.cpp layers whose experts stay on the CPU")
    ap.add_argument("--host-overhead", default="1536M",
                    help="RAM a CUDA process holds outside Hypura's plan; its RAM budget is the cap minus this")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--also-prefetch", action="store_true", help="also run Hypura with --prefetch (expert streaming)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    res = {"resident": resident, "dense": dense, "moe": moe}[args.row](args)
    res.update({"row": args.row, "model": str(args.model), "model_bytes": args.model.stat().st_size,
                "args": {k: str(v) for k, v in vars(args).items()}, "wall_s": time.time() - t0,
                "device": os.popen("nvidia-smi --query-gpu=name --format=csv,noheader").read().strip()})
    print(json.dumps({k: v for k, v in res.items() if k not in ("runs", "rounds")}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

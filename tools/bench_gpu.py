#!/usr/bin/env python3
"""GPU rows of docs/BENCHMARKS.md (run on the lent H100 after tools/device_setup.sh).

Row `resident`: a model that fits; `hypura run --mode resident` decode and prefill tok/s vs
llama-bench tg/pp on the same build, interleaved rounds, medians.
Row `dense`: a dense model under a GPU budget and a cgroup RAM cap; Hypura's plan (dense-FFN
streaming) vs llama-bench with -ngl chosen to fill the same GPU budget (mmap and dio) under the
same cap, caches dropped before every run; Hypura ÷ physical limit (disk GB/s ÷ disk bytes/token).

    python3 tools/bench_gpu.py resident --model q14.gguf --rounds 3 --out $OUT/resident.json
    python3 tools/bench_gpu.py dense --model l70.gguf --gpu-budget 6G --cap 8G --ngl 10 -n 8 --out ...
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
    from hypura_engine import GenerateOptions, LoadOptions, Runner
    from hypura_llama import SamplingOptions

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


def dense(args) -> dict:
    cap_b = size(args.cap)
    runs = {"hypura": [], "mmap": [], "dio": []}
    disk = []
    for r in range(args.rounds):
        drop_caches()
        disk.append(disk_bandwidth(args.model))
        for name in runs:
            drop_caches()
            cap = MemoryCap(cap_b)
            try:
                if name == "hypura":
                    res = run_hypura(args.model, cap, args.n, 16, ["--mode", "auto", "--gpu-budget", args.gpu_budget,
                                                                 "--ram-budget", str(cap_b - (1 << 30)), "--ctx", "512"])
                else:
                    res = run_llama_bench(args.model, cap, args.n, 16, ["-ngl", str(args.ngl), "-lm", name])
                res["cgroup_peak_bytes"] = cap.peak()
            finally:
                cap.close()
            runs[name].append(res)
            print(f"round {r} {name:6s} " + (f"{res['tps']:.3f} tok/s" if res["ok"] else res["error"][:160]),
                  flush=True)
    hy = [x for x in runs["hypura"] if x["ok"]]
    per_token = median([x.get("disk_bytes_per_token") for x in hy])
    bw = median(disk)
    limit = bw / per_token if per_token else None
    med = {k: median([x["tps"] for x in v]) for k, v in runs.items()}
    return {"runs": runs, "disk_bps": disk, "median_tps": med, "disk_bytes_per_token": per_token,
            "physical_limit_tps": limit, "hypura_over_limit": (med["hypura"] / limit) if limit and med["hypura"] else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", choices=("resident", "dense"))
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--gpu-budget", default="6G")
    ap.add_argument("--cap", default="8G")
    ap.add_argument("--ngl", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    res = resident(args) if args.row == "resident" else dense(args)
    res.update({"row": args.row, "model": str(args.model), "model_bytes": args.model.stat().st_size,
                "args": {k: str(v) for k, v in vars(args).items()}, "wall_s": time.time() - t0,
                "device": os.popen("nvidia-smi --query-gpu=name --format=csv,noheader").read().strip()})
    print(json.dumps({k: v for k, v in res.items() if k not in ("runs", "rounds")}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

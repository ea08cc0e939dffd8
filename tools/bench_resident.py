#!/usr/bin/env python3
"""Full-resident decode speed: `hypura run` ÷ `llama-bench` tg, side by side, interleaved.

Each round runs llama-bench (tg, -r 1) and `hypura run --raw --temp 0 --mode resident --json`
(decode tok/s = tokens decoded ÷ time inside llama_decode, as llama.cpp's eval time) on the same
model, thread count and build; medians over rounds. Prints a table, writes raw JSON.

    .venv/bin/python tools/bench_resident.py --rounds 7 -n 64 --out docs/bench/resident.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "build" / "llama.cpp" / "bin" / "llama-bench"


def llama_bench(model: Path, n: int, threads: int) -> float:
    out = subprocess.run([str(BENCH), "-m", str(model), "-p", "0", "-n", str(n), "-r", "1", "-t", str(threads),
                          "-o", "json"], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def hypura_run(model: Path, n: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "hypura.main", "run", str(model), "--raw", "--temp", "0",
                          "--mode", "resident", "-n", str(n + 1), "--threads", str(threads), "--json",
                          "-p", "Why is the sky blue?"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: the embedded gemma3:270m)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("-n", type=int, default=64, help="tokens decoded per run")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=None, help="write raw JSON here")
    args = ap.parse_args()
    if args.model is None:
        from hypura_engine import default_model_path

        args.model = default_model_path()
    rows = []
    for r in range(args.rounds):
        lb = llama_bench(args.model, args.n, args.threads)
        hy = hypura_run(args.model, args.n, args.threads)
        rows.append({"round": r, "llama_bench_tg_tps": lb, "hypura_eval_tps": hy["eval_tps"],
                     "hypura_tokens": len(hy["tokens"]), "ratio": hy["eval_tps"] / lb})
        print(f"round {r}: llama-bench {lb:7.2f} tok/s   hypura {hy['eval_tps']:7.2f} tok/s   "
              f"ratio {hy['eval_tps'] / lb:.3f}", flush=True)
    med = {k: statistics.median(x[k] for x in rows) for k in ("llama_bench_tg_tps", "hypura_eval_tps", "ratio")}
    result = {"benchmark": "resident-decode", "model": str(args.model), "n": args.n, "threads": args.threads,
              "machine": {"platform": platform.platform(), "cpu": platform.processor(), "cores": os.cpu_count()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": rows, "median": med}
    print(f"median: llama-bench {med['llama_bench_tg_tps']:.2f} tok/s, hypura {med['hypura_eval_tps']:.2f} tok/s, "
          f"median ratio {med['ratio']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

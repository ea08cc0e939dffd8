#!/usr/bin/env python3
"""Expert streaming, prompt processing against its bound: a ~512-token prompt under a cgroup cap.

The bound of a streamed prefill is `max(t_disk, t_resident)`: `t_disk` = the bytes the prompt's ubatches
read (the union of the experts each needs that the cache did not hold: `bytes_from_disk` of the run less
its decode passes') ÷ the O_DIRECT rate measured around the round, `t_resident` = the same prompt's
prefill with the file fully resident (warm, no cap, same threads). Hypura ÷ bound = its prompt tok/s ÷
(prompt tokens ÷ that bound). Rounds interleave with the page cache dropped before each streamed run.

    sudo .venv/bin/python tools/bench_prefill_bound.py --model /var/tmp/hb/q3-skew0.8.gguf --cap 2G \\
        --ram-budget 1.45G --rounds 3 --out docs/bench/q3-skew0.8-prefill-bound-issue18-s3.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MemoryCap, disk_bandwidth, drop_caches, median  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog and runs far away"


def run(model: Path, args: list[str], prompt: str, cap: MemoryCap | None) -> dict:
    argv = [sys.executable, "-m", "hypura.main", "run", str(model), "--raw", "--temp", "0", "-n", "1", "--json",
            "-p", prompt, *args]
    p = subprocess.run(cap.wrap(argv) if cap else argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr.strip()[-400:]}
    out = json.loads(p.stdout)
    for k in ("text", "tokens", "routing", "expert_hit_rate_by_layer"):
        out.pop(k, None)
    return {"ok": True, **out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--cap", required=True)
    ap.add_argument("--ram-budget", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=19, help="times the sentence is repeated (19: 513 tokens on the "
                                                           "synthetic qwen3 vocabulary)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from hypura.config import parse_size

    prompt = " ".join([TEXT] * a.repeat)
    common = ["--ctx", "1024", "--threads", str(a.threads)]
    resident = []
    for _ in range(2):   # warm: the second run's figure is the one kept with the first's
        r = run(a.model, ["--mode", "resident", *common], prompt, None)
        if not r["ok"]:
            print("resident failed:", r["error"])
            return 1
        resident.append(r["prompt_tps"])
    n_prompt = r["prompt_tokens"]
    t_res = n_prompt / max(resident)
    print(f"resident prefill: {n_prompt} tokens at {max(resident):.1f} tok/s ({t_res:.2f} s)", flush=True)
    rounds = []
    for i in range(a.rounds):
        drop_caches()
        before = disk_bandwidth(a.model, nbytes=2 << 30)
        drop_caches()
        cap = MemoryCap(parse_size(a.cap))
        try:
            h = run(a.model, ["--mode", "expert-stream", "--ram-budget", a.ram_budget, "--no-warm-start", *common],
                    prompt, cap)
            h["cgroup_peak_bytes"] = cap.peak()
        finally:
            cap.close()
        drop_caches()
        after = disk_bandwidth(a.model, nbytes=2 << 30)
        if not h["ok"]:
            print(f"round {i}: {h['error']}")
            rounds.append({"ok": False, "error": h["error"]})
            continue
        bw = (before + after) / 2
        prompt_bytes = h["bytes_from_disk"] - h["disk_bytes_per_token"] * h["decode_passes"]
        t_disk = prompt_bytes / bw
        bound_tps = n_prompt / max(t_disk, t_res)
        row = {"ok": True, "prompt_tps": h["prompt_tps"], "prompt_bytes": prompt_bytes, "disk_bps": bw,
               "t_disk_s": t_disk, "t_resident_s": t_res, "bound_tps": bound_tps,
               "over_bound": h["prompt_tps"] / bound_tps, "stall_s": h["stall_s"], "prefetch": h.get("prefetch"),
               "cgroup_peak_bytes": h["cgroup_peak_bytes"], "run": h}
        rounds.append(row)
        print(f"round {i}: {h['prompt_tps']:.1f} tok/s, {prompt_bytes / 1e9:.2f} GB at {bw / 1e9:.2f} GB/s "
              f"(t_disk {t_disk:.2f} s, t_resident {t_res:.2f} s): {row['over_bound']:.3f} of the bound", flush=True)
    ok = [r for r in rounds if r["ok"]]
    result = {"model": str(a.model), "cap": a.cap, "ram_budget": a.ram_budget, "prompt_tokens": n_prompt,
              "threads": a.threads, "resident_prompt_tps": resident, "rounds": rounds,
              "median_prompt_tps": median([r["prompt_tps"] for r in ok]),
              "median_over_bound": median([r["over_bound"] for r in ok]),
              "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps({k: result[k] for k in ("prompt_tokens", "median_prompt_tps", "median_over_bound")}))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

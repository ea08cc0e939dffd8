#!/usr/bin/env python3
"""Speculative decoding under expert streaming (issue 15): plain greedy decoding against `--draft ngram` on a
synthetic MoE file, each configuration a child process inside a cgroup memory cap, caches dropped before
each, rounds interleaving the configurations. Reports per configuration the median over rounds of tok/s
(generated tokens after the first ÷ decode wall time), and for the draft: the depths the policy chose (passes
per depth: 0 is plain decoding, so a draft that does not pay shows as depth 0), tokens per pass, acceptance,
the pass costs t(n) it measured, whether the greedy output equals plain decoding's, and the expert cache's
hit rate and bytes read per token.

  .venv/bin/python tools/bench_speculative_moe.py --model /var/tmp/hb/q3-skew0.8.gguf --cap 2G --ram-budget 1.45G \
      --rounds 3 --out docs/bench/speculative-moe-q3-issue15-s3.json

Synthetic models have random weights: their greedy text is no language, and prompt lookup is accepted only
where that text repeats itself. The prompts repeat (the draft's use case) so that the draft gets its chance.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

PROMPTS = ["the cat sat on the mat and the cat sat on the mat and the cat sat on the mat and the cat sat on the",
           "one two three four one two three four one two three four one two three four one two three",
           "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a + b\n\ndef add(a, b):\n",
           "red green blue red green blue red green blue red green blue red green blue red green"]


def child(a) -> dict:
    from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions

    opts = LoadOptions(mode=a.mode, ctx=a.ctx, n_threads=a.threads, ram_budget=a.ram_budget,
                       draft="ngram" if a.child == "ngram" else None)
    t0 = time.perf_counter()
    runner = Runner(a.model, opts)
    load_s = time.perf_counter() - t0
    greedy = GenerateOptions(num_predict=a.n, sampling=SamplingOptions(temperature=0))
    rows = []
    try:
        for text in PROMPTS[:a.prompts]:
            res = list(runner.generate(runner.tokenize(text), greedy))[-1]
            rows.append({"tokens": res.tokens, "decode_s": (res.total_ns - res.prompt_ns) / 1e9,
                         "speculative": res.speculative})
        stats = runner.stats()
        policy = runner.speculation.policy.summary() if runner.speculation is not None else None
        info = runner.speculation.info() if runner.speculation is not None else None
    finally:
        runner.close()
    keep = ("mode", "streamed_layers", "bytes_from_disk", "disk_gbps", "stall_s", "passes", "expert_cache_hit_rate",
            "cache_slots", "ram_cache_slots")
    return {"config": a.child, "load_s": load_s, "rows": rows, "policy": policy, "speculation": info,
            "stats": {k: stats[k] for k in keep if k in stats}}


def run_child(a, config: str) -> dict:
    from benchlib import MemoryCap, drop_caches

    from hypura_placement import parse_size

    argv = [sys.executable, __file__, "--child", config, "--model", a.model, "--mode", a.mode, "-n", str(a.n),
            "--prompts", str(a.prompts), "--ctx", str(a.ctx), "--threads", str(a.threads),
            "--ram-budget", str(a.ram_budget)]
    cap = MemoryCap(parse_size(a.cap))
    drop_caches()
    try:
        p = subprocess.run(cap.wrap(argv), capture_output=True, text=True, timeout=3000)
        peak = cap.peak()
    finally:
        cap.close()
    if p.returncode != 0:
        return {"config": config, "error": p.stderr[-2000:]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["cgroup_peak_bytes"] = peak
    gen = sum(max(len(r["tokens"]) - 1, 0) for r in out["rows"])
    out["tok_s"] = gen / sum(r["decode_s"] for r in out["rows"])
    return out


def summarize(runs: dict[str, list[dict]]) -> dict:
    out: dict = {}
    plain = [r for r in runs.get("plain", []) if "error" not in r]
    for config, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            continue
        s = {"tok_s": round(statistics.median(r["tok_s"] for r in ok), 3), "tok_s_rounds": [round(r["tok_s"], 3) for r in ok],
             "hit_rate": [r["stats"].get("expert_cache_hit_rate") for r in ok],
             # every byte read after loading (the prompts' passes included) per generated token
             "disk_bytes_per_generated_token": [round(r["stats"].get("bytes_from_disk", 0) / max(1, sum(
                 len(x["tokens"]) for x in r["rows"]))) for r in ok],
             "cgroup_peak_bytes": max(r["cgroup_peak_bytes"] or 0 for r in ok)}
        if config != "plain" and plain:
            s["speedup_median"] = round(s["tok_s"] / statistics.median(r["tok_s"] for r in plain), 3)
            ref = [x["tokens"] for x in plain[0]["rows"]]
            s["identical_outputs"] = [sum(x["tokens"] == y for x, y in zip(r["rows"], ref)) for r in ok]
            spec = [x["speculative"] for r in ok for x in r["rows"]]
            drafted, accepted = sum(x.get("drafted", 0) for x in spec), sum(x.get("accepted", 0) for x in spec)
            passes = sum(x.get("passes", 0) for x in spec)
            gen = sum(max(len(x["tokens"]) - 1, 0) for r in ok for x in r["rows"])
            s.update(drafted=drafted, accepted=accepted, acceptance_rate=round(accepted / drafted, 4) if drafted else 0.0,
                     tokens_per_pass=round(gen / passes, 3) if passes else None,
                     depths=[r["policy"]["depths"] for r in ok], t_ms=[r["policy"]["t_ms"] for r in ok],
                     alpha=[r["policy"]["alpha"] for r in ok], probes=[r["policy"]["probes"] for r in ok],
                     draft_max=ok[0]["speculation"]["draft_max"], exact_batch=ok[0]["speculation"]["exact_batch"])
        out[config] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", default="expert-stream")
    ap.add_argument("--cap", default="2G")
    ap.add_argument("--ram-budget", type=lambda t: __import__("hypura_placement").parse_size(t), default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--configs", default="plain,ngram")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return 0
    runs: dict[str, list[dict]] = {c: [] for c in a.configs.split(",")}
    meta = {"model": a.model, "mode": a.mode, "cap": a.cap, "ram_budget": a.ram_budget, "n": a.n, "ctx": a.ctx,
            "prompts": PROMPTS[:a.prompts], "rounds": a.rounds}
    for rnd in tqdm(range(a.rounds), desc="rounds"):
        for config in runs:
            r = run_child(a, config)
            r["round"] = rnd
            runs[config].append(r)
            if a.out:
                a.out.write_text(json.dumps({**meta, "summary": summarize(runs), "runs": runs}, indent=1) + "\n")
    result = {**meta, "summary": summarize(runs), "runs": runs}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

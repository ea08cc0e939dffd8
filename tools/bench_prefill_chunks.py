#!/usr/bin/env python3
"""Expert streaming, prompt processing: a 432-token prompt in one ubatch vs in cache-sized chunks.

When the expert cache holds a whole layer's experts, any batch's union of experts fits it, so the
streamer allows llama.cpp's default ubatch (`ExpertStreamer.max_ubatch`); before, prompts went in chunks
of n_slots // n_used tokens, each reading its layers' experts again. "chunks" re-creates that limit in
the child process (a property patched before the CLI runs); both run `hypura run` under the same 3 GiB
cgroup cap, page cache dropped before each, interleaved, 3 rounds.

    .venv/bin/python tools/bench_prefill_chunks.py /var/tmp/hb/mixtral-8l-skew0.8.gguf docs/bench/moe-cpu-prefill.json
"""
import json, subprocess, sys, time
sys.path.insert(0, "tools")
from benchlib import MemoryCap, drop_caches, median
P = " ".join(["the quick brown fox jumps over the lazy dog and runs far away"] * 16)
OLD = "from hypura_streaming import ExpertStreamer as E; E.max_ubatch = property(lambda s: max(1, s.n_slots // max(1, s.n_used)));"
res = {"chunks": [], "one-ubatch": []}
for r in range(3):
    for name in res:
        code = (OLD if name == "chunks" else "") + "import sys; from hypura.main import main; sys.exit(main())"
        argv = [sys.executable, "-c", code, "run", sys.argv[1], "--mode", "expert-stream", "--ram-budget", "2592079872",
                "--ctx", "512", "--no-warm-start", "-n", "2", "--raw", "--temp", "0", "--json", "-p", P]
        drop_caches()
        cap = MemoryCap(3 << 30)
        p = subprocess.run(cap.wrap(argv), capture_output=True, text=True)
        d = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-300:], "rc": p.returncode}
        row = {k: d.get(k) for k in ("prompt_tokens", "prompt_tps", "bytes_from_disk", "passes", "cache_slots", "error")}
        row["cgroup_peak"] = cap.peak()
        res[name].append(row)
        print(r, name, row, flush=True)
out = {"model": sys.argv[1], "cap_bytes": 3 << 30, "ram_budget": 2592079872, "prompt_tokens": res["chunks"][0]["prompt_tokens"],
       "runs": res, "median_prompt_tps": {k: median([x["prompt_tps"] for x in v]) for k, v in res.items()}}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(out["median_prompt_tps"])

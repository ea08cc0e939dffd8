#!/usr/bin/env python3
"""Is plain dense streaming disk-bound? (issue 15) The default model (Gemma 3 270M Q4_K_M) decoded plainly,
greedy, resident and dense-streamed at several RAM budgets (share of FFN bytes left to disk) and under cgroup-v1
blkio read throttles, each configuration in its own child process; per decoded token: wall time, the decode
thread's stall (waiting for a layer's reads and their CPU-repack conversion), the conversion's own time, the
reader's busy time, bytes read, and the disk's O_DIRECT rate measured inside the same cgroup just before and
after. Rounds interleave the configurations.

  .venv/bin/python tools/bench_dense_diskbound.py --rounds 3 --out docs/bench/dense-diskbound-issue15-s3.json

A configuration is `resident`, `resident-norepack`, `stream:SHARE`, `stream-norepack:SHARE`, with an optional
`@RATE` (a blkio throttle of the child's reads, e.g. `stream:0.6@400M`), `+passive` (the child runs with
OMP_WAIT_POLICY=PASSIVE: ggml's OpenMP threads sleep at once instead of spinning) and `+t1` (one compute
thread), `+slotsN` (what if the plan gave N slots instead of its own count). The conversion time and the decode thread's time issuing reads (`_issue`, `_prefetch`, which wait for
a slot's earlier fill outside `stall_s`) are measured by timing the streamer's methods from outside: nothing in
the streamer changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from benchlib import ReadThrottle  # noqa: E402

DEFAULT_CONFIGS = ("resident,resident-norepack,stream:0.3,stream:0.6,stream:1.0,stream-norepack:0.6,"
                   "stream:0.6@800M,stream:0.6@400M,stream:0.6@200M")


def parse_config(text: str) -> tuple[str, float, int | None]:
    from hypura_placement import parse_size

    spec, _, rate = text.split("+")[0].partition("@")
    kind, _, share = spec.partition(":")
    return kind, float(share or 0), parse_size(rate) if rate else None


def child(a) -> dict:
    """One configuration in this process: probe, load, warm up, decode `-n` tokens of each prompt, probe."""
    from benchlib import disk_bandwidth

    from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions, default_model_path
    from bench_speculative import ALL_PROMPTS, stream_budget

    path = Path(a.model) if a.model else default_model_path()
    kind, share, _ = parse_config(a.child)
    repack = not kind.endswith("norepack")
    threads = 1 if "+t1" in a.child else a.threads
    common = dict(ctx=a.ctx, n_threads=threads, use_extra_bufts=repack)
    if kind.startswith("stream"):
        opts = LoadOptions(mode="dense-stream", ram_budget=stream_budget(path, a.ctx, share), **common)
    else:
        opts = LoadOptions(mode="resident", **common)
    if "+slots" in a.child:                   # what-if: the plan's slot count replaced (the slots' RAM is extra)
        from hypura_streaming import StreamSpec

        forced, dense = int(a.child.split("+slots")[1].split("+")[0]), StreamSpec.dense.__func__
        StreamSpec.dense = classmethod(lambda cls, p, layers, n_slots=2, ram_layers=(): dense(cls, p, layers, forced,
                                                                                             ram_layers))
    disk_before = disk_bandwidth(path) if kind.startswith("stream") else None
    runner = Runner(path, opts)
    conv = {"s": 0.0, "cpu_s": 0.0, "n": 0}
    repacker = getattr(getattr(runner.streamer, "pool", None), "repacker", None)
    if repacker is not None:                  # time the conversions (on the reader threads) from outside
        inner, lock = repacker.convert, threading.Lock()

        def timed(t):
            w, c = time.perf_counter(), time.thread_time()
            inner(t)
            with lock:
                conv["s"] += time.perf_counter() - w
                conv["cpu_s"] += time.thread_time() - c
                conv["n"] += 1
        repacker.convert = timed
    streamer = runner.streamer
    if streamer is not None and hasattr(streamer, "_prefetch"):   # decode-thread time issuing reads
        for attr in ("_issue", "_prefetch"):
            conv[attr] = 0.0

            def timed_call(*args, _f=getattr(streamer, attr), _k=attr):
                outer = not conv.get("in_prefetch")      # _issue inside _prefetch counts as _prefetch's
                conv["in_prefetch"] = conv.get("in_prefetch") or _k == "_prefetch"
                t0 = time.perf_counter()
                try:
                    return _f(*args)
                finally:
                    if outer:
                        conv[_k] += time.perf_counter() - t0
                        conv["in_prefetch"] = False
            setattr(streamer, attr, timed_call)
    prompts = [p for p in ALL_PROMPTS if p["kind"] != "free"][:a.prompts]
    greedy = GenerateOptions(num_predict=a.n, sampling=SamplingOptions(temperature=0))
    try:
        list(runner.generate(runner.chat_prompt([{"role": "user", "content": prompts[0]["prompt"]}]),
                             GenerateOptions(num_predict=16, sampling=SamplingOptions(temperature=0))))
        s0 = runner.stats() if runner.streamer is not None else {}
        c0 = dict(conv)
        tokens, decode_s, outputs = 0, 0.0, []
        cpu0 = os.times()
        for item in prompts:
            res = list(runner.generate(runner.chat_prompt([{"role": "user", "content": item["prompt"]}]), greedy))[-1]
            tokens += max(len(res.tokens) - 1, 0)
            decode_s += (res.total_ns - res.prompt_ns) / 1e9
            outputs.append(res.tokens)
        cpu1 = os.times()
        s1 = runner.stats() if runner.streamer is not None else {}
    finally:
        runner.close()
    disk_after = disk_bandwidth(path) if disk_before is not None else None
    out = {"config": a.child, "mode": runner.mode, "loadavg_1m": os.getloadavg()[0], "tokens": tokens, "decode_s": decode_s,
           "tok_s": tokens / decode_s, "ms_per_token": 1e3 * decode_s / tokens,
           "process_cpu_s_per_token": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / tokens,
           "outputs": outputs}
    if s1:
        passes = s1["passes"] - s0["passes"]
        nbytes = s1["bytes_from_disk"] - s0["bytes_from_disk"]
        out.update(streamed_layers=s1["streamed_layers"], slots=s1["slots"], passes=passes,
                   disk_bytes_per_token=nbytes / passes, disk_before_Bps=disk_before, disk_after_Bps=disk_after,
                   stall_ms_per_token=1e3 * (s1["stall_s"] - s0["stall_s"]) / passes,
                   convert_ms_per_token=1e3 * (conv["s"] - c0["s"]) / passes,
                   convert_cpu_ms_per_token=1e3 * (conv["cpu_s"] - c0["cpu_s"]) / passes,
                   issue_ms_per_token=1e3 * (conv.get("_issue", 0) - c0.get("_issue", 0)) / passes,
                   prefetch_ms_per_token=1e3 * (conv.get("_prefetch", 0) - c0.get("_prefetch", 0)) / passes,
                   misses_per_pass=(s1["fills"] - s0["fills"] - s1["prefetch_hits"] + s0["prefetch_hits"]) / passes,
                   streamer_gbps=s1["disk_gbps"], prefetch_hits=s1["prefetch_hits"] - s0["prefetch_hits"],
                   fills=s1["fills"] - s0["fills"])
        rate = (disk_before + disk_after) / 2
        out["disk_ms_per_token"] = 1e3 * out["disk_bytes_per_token"] / rate
        out["disk_limit_tok_s"] = rate / out["disk_bytes_per_token"]
        out["of_disk_limit"] = out["tok_s"] / out["disk_limit_tok_s"]
    return out


def run_config(a, config: str) -> dict:
    _, _, bps = parse_config(config)
    argv = [sys.executable, __file__, "--child", config, "-n", str(a.n), "--prompts", str(a.prompts),
            "--ctx", str(a.ctx), "--threads", str(a.threads), *(["--model", a.model] if a.model else [])]
    throttle = ReadThrottle(Path(a.model) if a.model else _default_path(), bps) if bps else None
    try:
        env = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if "+passive" in config else {})}
        p = subprocess.run(throttle.wrap(argv) if throttle else argv, capture_output=True, text=True, timeout=1800,
                           env=env)
    finally:
        if throttle:
            throttle.close()
    if p.returncode != 0:
        return {"config": config, "error": p.stderr[-1500:]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["throttle_Bps"] = bps
    return out


def _default_path() -> Path:
    from hypura_engine import default_model_path

    return Path(default_model_path())


KEYS = ("loadavg_1m", "tok_s", "ms_per_token", "process_cpu_s_per_token", "disk_bytes_per_token", "stall_ms_per_token",
        "convert_ms_per_token", "convert_cpu_ms_per_token", "issue_ms_per_token", "prefetch_ms_per_token",
        "misses_per_pass", "disk_ms_per_token", "disk_limit_tok_s", "of_disk_limit",
        "disk_before_Bps", "disk_after_Bps", "streamer_gbps")


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    ref = next((r["outputs"] for r in runs.get("resident", []) if "outputs" in r), None)
    for config, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            continue
        s = {k: round(statistics.median([r[k] for r in ok]), 4) for k in KEYS if k in ok[0]}
        s["rounds"] = len(ok)
        s["tok_s_rounds"] = [round(r["tok_s"], 2) for r in ok]
        if "streamed_layers" in ok[0]:
            s["streamed_layers"], s["slots"] = ok[0]["streamed_layers"], ok[0]["slots"]
        if ref is not None and "norepack" not in config:
            s["outputs_equal_resident"] = all(r["outputs"] == ref for r in ok)
        out[config] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return 0
    configs = a.configs.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    meta = {"model": a.model or str(_default_path()), "n": a.n, "prompts": a.prompts, "ctx": a.ctx,
            "threads": a.threads, "rounds": a.rounds, "cpus": os.cpu_count()}
    for rnd in tqdm(range(a.rounds), desc="rounds"):
        for c in configs:
            r = run_config(a, c)
            r["round"] = rnd
            runs[c].append(r)
            if a.out:
                a.out.write_text(json.dumps({**meta, "summary": summarize(runs), "runs": runs}, indent=1) + "\n")
    result = {**meta, "summary": summarize(runs), "runs": runs}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

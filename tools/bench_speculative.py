#!/usr/bin/env python3
"""Speculative decoding (issue 15) on the CPU box: plain decoding against `--draft ngram`, resident and
dense-streamed, greedy, on the prompts of tools/speculative_prompts.json (rewrite / fix this function / answer
from this text), the configurations interleaved prompt by prompt so that the machine's noise is shared.

  .venv/bin/python tools/bench_speculative.py --out docs/bench/speculative-cpu-issue15.json
  .venv/bin/python tools/bench_speculative.py --identity --out docs/bench/speculative-identity-issue15.json
  .venv/bin/python tools/bench_speculative.py --tk --model /var/tmp/hb/llama3-70b-12l.gguf --cap 4G \
      --out docs/bench/speculative-tk-llama3-70b-issue15.json

Default run: per configuration, tokens generated ÷ decode wall time (everything after the prompt's pass:
drafting, verification passes, choosing tokens), tokens per pass, acceptance; greedy output compared with
plain decoding of the same placement; for dense streaming the bytes read per token and the disk's O_DIRECT
rate measured before and after (the physical limit of plain streaming = rate ÷ bytes per token).
--identity: the share of greedy outputs that stay identical when the depth goes beyond the batches that are
bit-identical (`--draft-max 8`), over every prompt in three forms (chat, raw, chat with a system message).
--tk: the cost t(n) of one verification pass of n = 1, 2, 4, 8, 16 tokens (a child process inside a cgroup
memory cap, caches dropped first), relative to n = 1, and the speed-up an acceptance rate buys at the best depth.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from benchlib import ReadThrottle, disk_bandwidth  # noqa: E402

ALL_PROMPTS = json.loads((ROOT / "tools" / "speculative_prompts.json").read_text())
PROMPTS = [p for p in ALL_PROMPTS if p["kind"] != "free"]   # the 24 of the issue: text the answer reuses
SYSTEM = "You are a careful assistant. Keep the user's wording wherever you can."


def stream_budget(path: Path, ctx: int, share: float) -> int:
    """A RAM budget that leaves `share` of the FFN bytes to stream from disk."""
    from hypura_engine import LoadOptions
    from hypura_engine.planning import plan_for

    full, _ = plan_for(path, LoadOptions(mode="auto", ctx=ctx, ram_budget=64 << 30))
    ffn = sum(r["ffn_bytes"] for r in full.layers)
    return int(full.used("ram") - ffn * share)


def tokens_of(runner, item: dict, form: str = "chat") -> list[int]:
    text = item["prompt"]
    if form == "raw":
        return runner.tokenize(text)
    msgs = ([{"role": "system", "content": SYSTEM}] if form == "system" else []) + [{"role": "user", "content": text}]
    return runner.chat_prompt(msgs)


TEMP = {"t": 0.0}   # --temp: sampling at temperature > 0 (seeded) instead of greedy


def generate(runner, toks: list[int], n: int) -> dict:
    from hypura_engine import GenerateOptions, SamplingOptions

    t0 = time.perf_counter_ns()
    s = SamplingOptions(temperature=TEMP["t"], top_k=40, top_p=0.95, seed=1)
    items = list(runner.generate(toks, GenerateOptions(num_predict=n, sampling=s)))
    res = items[-1]
    decode_ns = res.total_ns - res.prompt_ns
    out = {"tokens": res.tokens, "n": len(res.tokens), "decode_s": decode_ns / 1e9, "eval_s": res.eval_ns / 1e9,
           "done_reason": res.done_reason, "wall_s": (time.perf_counter_ns() - t0) / 1e9}
    if res.speculative is not None:
        out["speculative"] = {k: v for k, v in res.speculative.items() if k not in ("t_ms", "t_rel")}
        out["t_ms"] = res.speculative.get("t_ms")
    return out


def rate(runs: list[dict]) -> float:
    """Tokens after the first ÷ decode wall time, summed over prompts."""
    return sum(max(r["n"] - 1, 0) for r in runs) / sum(r["decode_s"] for r in runs)


def main_speed(a) -> dict:
    from hypura_engine import LoadOptions, Runner, default_model_path

    path = Path(a.model) if a.model else default_model_path()
    budget = stream_budget(path, a.ctx, a.stream_share)
    common = dict(ctx=a.ctx, n_threads=a.threads)
    configs = {"resident": LoadOptions(mode="resident", **common),
               "resident+ngram": LoadOptions(mode="resident", draft=a.draft, **common),
               "stream": LoadOptions(mode="dense-stream", ram_budget=budget, **common),
               "stream+ngram": LoadOptions(mode="dense-stream", ram_budget=budget, draft=a.draft, **common)}
    if a.configs:
        configs = {k: v for k, v in configs.items() if k in a.configs.split(",")}
    disk_before = disk_bandwidth(path) if any("stream" in k for k in configs) else None
    runners = {name: Runner(path, opts) for name, opts in configs.items()}
    info = {name: {"mode": r.mode, "load_s": r.load_ns / 1e9,
                   **({"streamed_layers": len(r.plan.streamed_layers["nvme"])} if r.plan is not None else {}),
                   **({k: v for k, v in r.speculation.info().items()} if r.speculation is not None else {})}
            for name, r in runners.items()}
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    kinds = a.kinds.split(",")
    prompts = [p for p in ALL_PROMPTS if p["kind"] in kinds][:a.prompts]
    meta = {"model": str(path), "draft": a.draft, "n": a.n, "temp": a.temp, "ctx": a.ctx, "threads": a.threads, "ram_budget": budget, "kinds": kinds,
            "stream_share": a.stream_share, "disk_Bps_before": disk_before, "configs": info}
    try:
        for name, r in runners.items():           # warm-up: one short generation each
            generate(r, tokens_of(r, prompts[0]), 32)
        for item in tqdm(prompts, desc="prompts"):
            for name, r in runners.items():
                out = generate(r, tokens_of(r, item), a.n)
                out["kind"] = item["kind"]
                runs[name].append(out)
            if a.out:                             # after every prompt: a run cut short keeps what it measured
                partial = {**meta, "complete": False, "summary": summarize(runs, runners, kinds, None), "runs": runs}
                a.out.write_text(json.dumps(partial, indent=1) + "\n")
        summary = summarize(runs, runners, kinds, None)
    finally:
        stats = {name: r.stats() for name, r in runners.items()}
        for r in runners.values():
            r.close()
    disk_after = disk_bandwidth(path) if disk_before is not None else None
    summary = summarize(runs, stats, kinds, (disk_before, disk_after))
    return {**meta, "complete": True, "disk_Bps_after": disk_after, "summary": summary, "runs": runs}


def summarize(runs: dict, stats_or_runners: dict, kinds: list[str], disk: tuple | None) -> dict:
    stats = {k: (v.stats() if hasattr(v, "stats") else v) for k, v in stats_or_runners.items()}
    summary = {}
    for name, rs in runs.items():
        if not rs:
            continue
        base = "stream" if name.startswith("stream") else "resident"
        s = {"tok_s": round(rate(rs), 3), "tokens": sum(r["n"] for r in rs), "prompts": len(rs)}
        if base in runs and name != base:
            s["speedup"] = round(rate(rs) / rate(runs[base][:len(rs)]), 3)
            per = [rate([x]) / rate([y]) for x, y in zip(rs, runs[base]) if x["n"] > 1 and y["n"] > 1]
            s["speedup_median_per_prompt"] = round(statistics.median(per), 3)
            s["identical_outputs"] = sum(x["tokens"] == y["tokens"] for x, y in zip(rs, runs[base]))
        if "speculative" in rs[0]:
            drafted = sum(r["speculative"]["drafted"] for r in rs)
            accepted = sum(r["speculative"]["accepted"] for r in rs)
            passes = sum(r["speculative"]["passes"] for r in rs)
            s.update(drafted=drafted, accepted=accepted, passes=passes,
                     acceptance_rate=round(accepted / drafted, 4) if drafted else 0.0,
                     tokens_per_pass=round(sum(max(r["n"] - 1, 0) for r in rs) / passes, 3) if passes else 0.0)
            for kind in kinds:
                ks = [r for r in rs if r["kind"] == kind]
                kb = [y for x, y in zip(rs, runs.get(base, [])) if x["kind"] == kind]
                s[f"speedup_{kind}"] = round(rate(ks) / rate(kb), 3) if kb else None
        if name.startswith("stream"):
            st = stats[name]
            s.update(disk_bytes_per_token=st.get("disk_bytes_per_token"), disk_gbps=st.get("disk_gbps"))
        summary[name] = s
    if "stream" in summary and disk and disk[0] and disk[1]:
        bpt = stats["stream"].get("disk_bytes_per_token") or 0
        mean_disk = (disk[0] + disk[1]) / 2
        summary["stream"]["physical_limit_tok_s"] = round(mean_disk / bpt, 3) if bpt else None
        summary["stream"]["of_limit"] = round(summary["stream"]["tok_s"] / (mean_disk / bpt), 3) if bpt else None
    return summary


def main_identity(a) -> dict:
    from hypura_engine import LoadOptions, Runner, default_model_path

    path = Path(a.model) if a.model else default_model_path()
    plain = Runner(path, LoadOptions(mode="resident", ctx=a.ctx, n_threads=a.threads))
    wide = Runner(path, LoadOptions(mode="resident", ctx=a.ctx, n_threads=a.threads, draft="ngram",
                                    draft_max=a.draft_max))
    rows = []
    try:
        cases = [(item, form) for form in ("chat", "raw", "system") for item in PROMPTS]
        for item, form in tqdm(cases, desc="prompts"):
            x = generate(plain, tokens_of(plain, item, form), a.n)
            y = generate(wide, tokens_of(wide, item, form), a.n)
            first = next((i for i, (p, q) in enumerate(zip(x["tokens"], y["tokens"])) if p != q), None)
            rows.append({"kind": item["kind"], "form": form, "identical": x["tokens"] == y["tokens"],
                         "first_difference": first, "n": x["n"], **y.get("speculative", {})})
        info = wide.speculation.info()
    finally:
        plain.close()
        wide.close()
    same = sum(r["identical"] for r in rows)
    return {"model": str(path), "n": a.n, "draft_max": a.draft_max, "speculation": info, "prompts": len(rows),
            "identical": same, "share_identical": round(same / len(rows), 4), "rows": rows}


def pass_costs(a) -> dict:
    """t(n) of one verification pass of n tokens (all rows' logits), n in --sizes, each --repeat times, after a
    short prompt; run inside the memory cap by --tk."""
    from hypura_engine import LoadOptions, Runner

    runner = Runner(a.model, LoadOptions(mode=a.mode, ctx=256, n_threads=a.threads, ram_budget=a.ram_budget))
    try:
        toks = runner.tokenize("The quick brown fox jumps over the lazy dog")
        ctx = runner.ctx
        ctx.decode(toks, 0)
        seq = [int(t) for t in (toks * 8)[:max(a.sizes)]]
        times: dict[int, list[float]] = {}
        for _ in range(a.repeat):
            for n in a.sizes:
                ctx.truncate(len(toks))
                t0 = time.perf_counter()
                ctx.decode(seq[:n], len(toks), all_logits=n > 1)
                ctx.synchronize()
                times.setdefault(n, []).append(time.perf_counter() - t0)
        stats = runner.stats()
    finally:
        runner.close()
    return {"mode": stats["mode"], "times_s": times, "disk_bytes_per_token": stats.get("disk_bytes_per_token"),
            "streamed_layers": stats.get("streamed_layers")}


def main_tk(a) -> dict:
    """--tk: pass_costs in a child process under a cgroup cap; t(n)/t(1) and the tok/s an acceptance buys."""
    import subprocess

    from benchlib import MemoryCap, drop_caches

    from hypura_placement import parse_size

    cap = MemoryCap(parse_size(a.cap))
    drop_caches()
    argv = [sys.executable, __file__, "--tk-child", "--model", a.model, "--mode", a.mode, "--threads", str(a.threads),
            "--ram-budget", str(parse_size(a.cap) - (600 << 20)), "--repeat", str(a.repeat),
            "--sizes", ",".join(map(str, a.sizes))]
    try:
        p = subprocess.run(cap.wrap(argv), capture_output=True, text=True, timeout=3000)
        peak = cap.peak()
    finally:
        cap.close()
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    med = {int(n): statistics.median(v) for n, v in out["times_s"].items()}
    rel = {n: round(med[n] / med[1], 4) for n in sorted(med)}
    buys = {}
    for alpha in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        best = max(((1 - alpha ** n) / (1 - alpha) / med[n], n - 1) for n in med)
        buys[str(alpha)] = {"depth": best[1], "speedup": round(best[0] * med[1], 3)}
    return {"model": a.model, "cap": a.cap, "mode": out["mode"], "cgroup_peak_bytes": peak,
            "disk_bytes_per_token": out["disk_bytes_per_token"], "streamed_layers": out["streamed_layers"],
            "t_s": {n: round(med[n], 4) for n in sorted(med)}, "t_rel": rel, "acceptance_buys": buys,
            "times_s": out["times_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF (default: the embedded Gemma 3 270M Q4_K_M)")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate per prompt")
    ap.add_argument("--prompts", type=int, default=len(ALL_PROMPTS), help="use the first N prompts")
    ap.add_argument("--kinds", default="rewrite,code,answer",
                    help="prompt kinds (free: open-ended prompts, where prompt lookup rarely matches)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--stream-share", type=float, default=0.6, help="share of the FFN bytes left to stream")
    ap.add_argument("--configs", default=None, help="comma list of resident,resident+ngram,stream,stream+ngram")
    ap.add_argument("--identity", action="store_true", help="measure the share of identical outputs instead")
    ap.add_argument("--draft-max", type=int, default=8, help="--identity: the depth cap beyond the exact batch")
    ap.add_argument("--tk", action="store_true", help="t(n) of verification passes under --cap (cgroup)")
    ap.add_argument("--tk-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cap", default="4G")
    ap.add_argument("--mode", default="dense-stream")
    ap.add_argument("--ram-budget", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 4, 8, 16])
    ap.add_argument("--draft", default="ngram", help="the draft of the '+ngram' configurations (ngram or a GGUF)")
    ap.add_argument("--temp", type=float, default=0.0, help="temperature (default 0: greedy)")
    ap.add_argument("--throttle", default=None,
                    help="default run: limit this process's reads of the model's disk to RATE (cgroup-v1 blkio, "
                         "e.g. 400M): a slower disk, where plain streaming is disk-bound")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    TEMP["t"] = a.temp
    if a.tk_child:
        print(json.dumps(pass_costs(a)))
        return 0
    throttle = None
    if a.throttle and not (a.tk or a.identity):
        from hypura_engine import default_model_path
        from hypura_placement import parse_size

        throttle = ReadThrottle(Path(a.model) if a.model else default_model_path(), parse_size(a.throttle))
        throttle.join()
    try:
        result = main_tk(a) if a.tk else main_identity(a) if a.identity else main_speed(a)
    finally:
        if throttle is not None:
            throttle.leave()
            throttle.close()
    if throttle is not None:
        result["throttle_Bps"] = throttle.bps
    text = json.dumps(result, indent=1)
    if a.out:
        a.out.write_text(text + "\n")
    head = {k: v for k, v in result.items() if k not in ("runs", "rows")}
    print(json.dumps(head, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

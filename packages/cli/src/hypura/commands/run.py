"""`hypura run [MODEL] [-p] PROMPT`: generate with a model, streaming tokens to the terminal; with no prompt
on a terminal, the interactive chat (`hypura.interactive`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hypura_hardware import peak_rss_bytes

from .. import interactive
from ._common import add_budget_args, add_draft_args, finite_float, int_in, load_options_from_args, resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text with a model (default: the embedded gemma3:270m)")
    p.add_argument("model", nargs="?", default=None, help="a .gguf path or a model name (default gemma3:270m)")
    p.add_argument("-p", "--prompt", help="the prompt (default: read standard input)")
    p.add_argument("-n", "--num-predict", type=int_in(-1, (1 << 31) - 1), default=256,
                   help="tokens to generate (-1: until done)")
    p.add_argument("--temp", type=finite_float, default=0.8, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int_in(0, (1 << 31) - 1), default=40)
    p.add_argument("--top-p", type=finite_float, default=0.9)
    p.add_argument("--seed", type=int_in(0, (1 << 32) - 1), default=None)
    p.add_argument("--raw", action="store_true", help="no chat template: the prompt goes to the model as is")
    p.add_argument("--system", default=None, help="system message (chat mode)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result and statistics")
    add_draft_args(p)
    add_budget_args(p)
    interactive.add_args(p)   # PROMPT words and the chat's flags
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hypura_engine import GenerateOptions, Runner, SamplingOptions

    if interactive.wants_chat(args):   # no prompt, on a terminal: the chat, as `ollama run` (hypura/interactive.py)
        return interactive.run_chat(args)
    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            raise ValueError("no prompt: pass -p PROMPT or pipe text to standard input")
        prompt = sys.stdin.read()
    name, path = resolve_model(args.model)
    from hypura_llama import report_bus_errors

    # resident runs read the file through a memory map: if it shrinks under us, one line instead of a core dump
    report_bus_errors(f"hypura: {path}: the model file changed while it was being read (truncated or rewritten "
                      f"under its memory map): stopped")
    opts = load_options_from_args(args)
    if args.mode == "auto" and _ctx_is_default(args):   # KV it cannot use would cost cache under a tight budget
        from hypura_engine.planning import fit_context

        opts.ctx, opts.ctx_reason = fit_context(path, [prompt, args.system or ""], args.num_predict, opts.ctx,
                                                chat=not args.raw)
    runner = Runner(path, opts, name=name)
    try:
        if args.raw:
            tokens = runner.tokenize(prompt)
        else:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            tokens = runner.chat_prompt(messages + [{"role": "user", "content": prompt}])
        sampling = SamplingOptions(temperature=args.temp, top_k=args.top_k, top_p=args.top_p)
        if args.seed is not None:
            sampling.seed = args.seed
        opts = GenerateOptions(num_predict=args.num_predict, sampling=sampling)
        result = None
        with runner.lock:
            for item in runner.generate(tokens, opts):
                if isinstance(item, str):
                    if not args.json:
                        sys.stdout.write(item)
                        sys.stdout.flush()
                else:
                    result = item
        stats = runner.stats()
        peak_rss = peak_rss_bytes()
        summary = {
            "model": name, "path": str(path), "text": result.text, "tokens": result.tokens,
            "done_reason": result.done_reason, "prompt_tokens": result.prompt_total,
            "eval_tokens": result.eval_tokens, "prompt_tps": round(result.prompt_tps, 3),
            "eval_tps": round(result.eval_tps, 3), "load_s": round(runner.load_ns / 1e9, 3),
            "peak_rss_bytes": peak_rss, **stats,
        }
        if result.speculative is not None:   # tokens per pass, acceptance, drafted and accepted counts
            summary["speculative"] = result.speculative
            summary["decode_s"] = round((result.total_ns - result.prompt_ns) / 1e9, 4)
        if args.json:
            print(json.dumps(summary))
        else:
            sys.stdout.write("\n")
            line = (f"[{summary['mode']}] prompt {result.prompt_total} tok @ {summary['prompt_tps']:.1f} tok/s, "
                    f"eval {result.eval_tokens} tok @ {summary['eval_tps']:.1f} tok/s, load {summary['load_s']} s")
            if "disk_bytes_per_token" in stats:
                line += (f", disk {stats['disk_bytes_per_token'] / 1e6:.1f} MB/tok @ {stats['disk_gbps']:.2f} GB/s"
                         f" (predicted {stats.get('predicted_tps', 0):.2f} tok/s)")
            spec = result.speculative
            if spec is not None and "passes" in spec:
                line += (f"\n[draft {spec['draft']}] {spec['tokens_per_pass']:.2f} tok/pass, accepted "
                         f"{spec['accepted']}/{spec['drafted']} drafted ({spec['acceptance_rate']:.0%}), "
                         f"depth <= {spec['draft_max']}" + ("" if spec["exact"] else " (beyond the exact batch)"))
            elif spec is not None:
                line += f"\n[draft {spec['draft']}] off: {spec.get('off_reason', '')}"
            print(line, file=sys.stderr)
        return 0
    finally:
        runner.close()


def _ctx_is_default(args: argparse.Namespace) -> bool:
    """No --ctx flag, HYPURA_CTX or configuration-file ctx: the context size is Hypura's to choose."""
    from ..config import load_config

    return load_config({"ctx": args.ctx}).sources["ctx"] == "default"


__all__ = ["register", "Path"]

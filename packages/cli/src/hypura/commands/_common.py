"""Arguments and model resolution shared by the `run` and `serve` commands."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def thread_count(text: str) -> int:
    """--threads: 0 (all cores) or a positive count, clamped to the cores this process may use."""
    n = int_in(0, 1 << 20)(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(n, cores)


def int_in(lo: int, hi: int):
    """An argparse type: an integer from `lo` to `hi` (a bad value is argparse's one-line error, exit 2)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n if len(text) < 40 else text[:40] + '...'} is not between {lo} and {hi}")
        return n
    return parse


def finite_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not math.isfinite(x) or abs(x) > 1e6:
        raise argparse.ArgumentTypeError(f"{text[:40]} is not a finite number between -1e6 and 1e6")
    return x


def size_arg(text: str) -> str:
    """--gpu-budget/--ram-budget: ``auto`` or a size below 2⁶⁰ bytes (checked here; config parses it)."""
    if text.strip().lower() == "auto":
        return text
    from hypura_placement import parse_size

    try:
        n = parse_size(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text[:40]!r} (examples: 8G, 512M, 16GiB)") from None
    if n >= 1 << 60:
        raise argparse.ArgumentTypeError(f"size {text[:40]!r} is too large")
    return text


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="auto", choices=("auto", "resident", "dense-stream", "expert-stream"),
                   help="placement mode (auto: follow the plan)")
    p.add_argument("--gpu-budget", default=None, type=size_arg,
                   help="compute-device memory budget, e.g. 8G (default: measured)")
    p.add_argument("--ram-budget", default=None, type=size_arg, help="RAM budget, e.g. 16G (default: measured)")
    p.add_argument("--ctx", type=int_in(1, 1 << 24), default=None, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=thread_count, default=0, help="CPU threads (default: the core count)")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="expert streaming: do not seed the expert cache from earlier runs' routing statistics")
    p.add_argument("--prefetch", action="store_true",
                   help="expert streaming: guess the next layer's experts and read them while a layer computes "
                        "(off by default: measured not to pay, docs/BENCHMARKS.md)")


def add_draft_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", default=None, metavar="MODEL|ngram",
                   help="speculative decoding: draft tokens with prompt lookup (ngram) or a small model sharing "
                        "the target's vocabulary (a .gguf path or a model name); the target verifies them in one "
                        "pass, so greedy output stays what it is without a draft")
    p.add_argument("--draft-max", type=int_in(1, 64), default=None, metavar="K",
                   help="at most K drafted tokens a pass (default: as many as keep batched logits bit-identical "
                        "to single-token ones on this model and backend, at most 8; more may change greedy output)")


def draft_spec(draft: str | None) -> str | None:
    """--draft: ``ngram`` (or ``ngram:MIN-MAX``) as is; a model name or path → the draft GGUF's path."""
    if draft is None or draft == "ngram" or draft.startswith("ngram:"):
        return draft
    return str(resolve_model(draft)[1])


def load_options_from_args(args: argparse.Namespace):
    from hypura_engine import LoadOptions

    from ..config import load_config

    cfg = load_config({"gpu_budget": args.gpu_budget, "ram_budget": args.ram_budget, "ctx": args.ctx})
    return LoadOptions(mode=args.mode, ctx=cfg.ctx, gpu_budget=cfg.gpu_budget, ram_budget=cfg.ram_budget,
                       n_threads=args.threads, warm_start=getattr(args, "warm_start", True),
                       prefetch=getattr(args, "prefetch", False), draft=draft_spec(getattr(args, "draft", None)),
                       draft_max=getattr(args, "draft_max", None))


def resolve_model(model: str | None) -> tuple[str, Path]:
    """A .gguf path or a model name → (display name, path). Raises FileNotFoundError / LookupError."""
    from hypura_engine import DEFAULT_MODEL, Registry

    if model is None:
        model = DEFAULT_MODEL
    p = Path(model).expanduser()
    if model.endswith(".gguf") or p.is_file() or "/" in model and p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"{model}: no such model file")
        return p.stem, p
    entry = Registry().resolve(model)
    return entry.name, entry.path

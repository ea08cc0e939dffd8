"""Arguments and model resolution shared by the `run` and `serve` commands."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="auto", choices=("auto", "resident", "dense-stream", "expert-stream"),
                   help="placement mode (auto: follow the plan)")
    p.add_argument("--gpu-budget", default=None, help="compute-device memory budget, e.g. 8G (default: measured)")
    p.add_argument("--ram-budget", default=None, help="RAM budget, e.g. 16G (default: measured)")
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the core count)")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="expert streaming: do not seed the expert cache from earlier runs' routing statistics")
    p.add_argument("--prefetch", action="store_true",
                   help="expert streaming: guess the next layer's experts and read them while a layer computes "
                        "(off by default: measured not to pay, docs/BENCHMARKS.md)")


def load_options_from_args(args: argparse.Namespace):
    from hypura_engine import LoadOptions

    from ..config import load_config

    cfg = load_config({"gpu_budget": args.gpu_budget, "ram_budget": args.ram_budget, "ctx": args.ctx})
    return LoadOptions(mode=args.mode, ctx=cfg.ctx, gpu_budget=cfg.gpu_budget, ram_budget=cfg.ram_budget,
                       n_threads=args.threads, warm_start=getattr(args, "warm_start", True),
                       prefetch=getattr(args, "prefetch", False))


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

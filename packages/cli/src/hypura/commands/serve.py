"""`hypura serve`: the Ollama- and OpenAI-compatible HTTP API."""
from __future__ import annotations

import argparse
import os

from ._common import int_in, size_arg, thread_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the Ollama-compatible HTTP API (default 127.0.0.1:11434)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; OLLAMA_HOST/HYPURA_HOST)")
    p.add_argument("--port", type=int_in(0, 65535), default=None, help="port (default 11434)")
    p.add_argument("--models", "--models-dir", dest="models_dir", default=None,
                   help="models directory (HYPURA_MODELS)")
    p.add_argument("--mode", default="auto", choices=("auto", "resident", "dense-stream", "expert-stream"),
                   help="placement mode for every model (default auto: follow the placement plan)")
    p.add_argument("--ctx", type=int_in(1, 1 << 24), default=None, help="default context size (num_ctx) in tokens")
    p.add_argument("--gpu-budget", default=None, type=size_arg, help="compute-device memory budget, e.g. 8G")
    p.add_argument("--ram-budget", default=None, type=size_arg, help="RAM budget, e.g. 16G")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (default: the core count)")
    p.add_argument("--keep-alive", default=None,
                   help="how long a model stays loaded after a request (default 5m; OLLAMA_KEEP_ALIVE)")
    p.add_argument("--max-loaded", type=int_in(1, 64), default=None,
                   help="models loaded at once (default 1; OLLAMA_MAX_LOADED_MODELS)")
    p.add_argument("--draft", action="append", default=None, metavar="NAME=DRAFT",
                   help="speculative decoding for model NAME: DRAFT is ngram (prompt lookup) or a draft model "
                        "sharing its vocabulary (name or .gguf path); a bare DRAFT is for every model; repeatable; "
                        "adds to the configuration file's [draft] table")
    p.add_argument("--draft-max", type=int_in(1, 64), default=None, metavar="K",
                   help="at most K drafted tokens a pass (default: what keeps greedy output exact, at most 8)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from hypura_server import serve
    from hypura_server.durations import parse_keep_alive

    from ..config import load_config

    cfg = load_config({"host": args.host, "port": args.port, "models_dir": args.models_dir, "ctx": args.ctx,
                       "gpu_budget": args.gpu_budget, "ram_budget": args.ram_budget, "draft": args.draft,
                       "draft_max": args.draft_max})
    keep = args.keep_alive or os.environ.get("OLLAMA_KEEP_ALIVE")
    try:
        keep_alive = parse_keep_alive(keep, 300.0) if keep else None
    except Exception as exc:  # the parser speaks HTTP (400); here it is a bad flag
        raise ValueError(f"--keep-alive: {exc}") from None
    max_loaded = args.max_loaded or int(os.environ.get("OLLAMA_MAX_LOADED_MODELS") or 1)
    from hypura_server.drafts import check_drafts

    return serve(cfg, mode=args.mode, n_threads=args.threads, keep_alive=keep_alive,
                 max_loaded=max_loaded, drafts=check_drafts(cfg.draft), draft_max=cfg.draft_max)

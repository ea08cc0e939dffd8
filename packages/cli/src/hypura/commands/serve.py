"""`hypura serve`: the Ollama-compatible HTTP API."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the Ollama-compatible HTTP API (default 127.0.0.1:11434)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; OLLAMA_HOST/HYPURA_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 11434)")
    p.add_argument("--models", dest="models_dir", default=None, help="models directory (HYPURA_MODELS)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from hypura_server import serve

    from ..config import load_config

    cfg = load_config({"host": args.host, "port": args.port, "models_dir": args.models_dir})
    return serve(cfg)

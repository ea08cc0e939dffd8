"""`hypura ps` and `hypura stop MODEL`: the running server's loaded models. Both need a server (without one
nothing is loaded, so there is nothing to list or stop): they say so, with exit status 2.

`ps` prints Ollama's columns (NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL) and Hypura's: the placement MODE,
the weight bytes on each tier (GPU, RAM, NVME), the expert cache's hit rate (expert streaming) and the
last generation's measured decode rate against the plan's prediction (TOK/S).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..client import ServerError, connect
from ..display import human_bytes, human_time, percent, table

HEADER = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "MODE", "GPU", "RAM", "NVME", "HIT RATE", "TOK/S", "UNTIL"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ps", help="list the running server's loaded models, with their tiers and speed")
    p.add_argument("prefix", nargs="?", default=None, help="only names that start with this")
    p.set_defaults(func=_ps)
    p = sub.add_parser("stop", help="unload a model from the running server")
    p.add_argument("model")
    p.set_defaults(func=_stop)


def processor(size: int, vram: int) -> str:
    """Ollama's PROCESSOR column: the share of the model in GPU memory."""
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if size == 0 or vram > size:
        return "Unknown"
    cpu = round(100 * (size - vram) / size)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def row(m: dict[str, Any]) -> list[str]:
    hy = m.get("hypura") or {}
    tiers = hy.get("tier_bytes") or {}
    measured, planned = hy.get("last_eval_tps"), hy.get("predicted_tps")
    tps = "-" if measured is None else f"{measured:.1f}"
    if planned:
        tps += f" (plan {planned:.1f})"
    return [m.get("name", ""), str(m.get("digest", ""))[:12], human_bytes(m.get("size", 0)),
            processor(int(m.get("size", 0)), int(m.get("size_vram", 0))), str(m.get("context_length", "")),
            str(hy.get("mode", "-")), *(human_bytes(tiers.get(t, 0)) for t in ("gpu", "ram", "nvme")),
            percent(hy.get("expert_cache_hit_rate")), tps, human_time(m.get("expires_at"))]


def _ps(args: argparse.Namespace) -> int:
    with connect(fallback=False) as client:
        models = client.request("GET", "/api/ps")["models"]
    rows = [row(m) for m in models if m.get("name", "").startswith(args.prefix or "")]
    table(rows, HEADER, out=sys.stdout)
    return 0


def _stop(args: argparse.Namespace) -> int:
    with connect(fallback=False) as client:
        try:
            client.request("POST", "/api/generate", {"model": args.model, "keep_alive": 0, "stream": False})
        except ServerError as exc:
            if exc.status == 404:
                raise LookupError(f"couldn't find model \"{args.model}\" to stop") from None
            raise
    return 0

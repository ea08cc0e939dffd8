"""`hypura inspect MODEL [--tensors] [--json]`: what a GGUF holds, by role, read from its header."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def resolve_path(model: str) -> Path:
    """MODEL as a .gguf path (model names resolve through the engine's registry, later)."""
    p = Path(model).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{model}: no such model file")
    if not p.is_dir() and not p.is_file():   # a FIFO or a device would block the reader forever
        raise ValueError(f"{model}: not a regular file")
    return p


def format_info(info, tensors: bool = False) -> str:
    """A readable summary of a ModelInfo (and its tensor table when ``tensors``)."""
    from hypura_placement import format_size

    lines = [f"model         {info.path}{'  (header-only: tensor table without data)' if info.header_only else ''}",
             f"name          {info.name}",
             f"architecture  {info.architecture}",
             f"parameters    {info.n_params / 1e9:.2f} B ({info.active_params() / 1e9:.2f} B active per token)",
             f"quantization  {info.file_type} (most weight bytes: {info.quantization})",
             f"file size     {format_size(info.file_size)} ({info.file_size} bytes)",
             f"layers        {info.n_layer}, embedding {info.n_embd}, heads {info.n_head}/{info.n_head_kv} kv, "
             f"vocabulary {info.n_vocab}, context {info.context_length}"]
    if info.n_expert:
        lines.append(f"experts       {info.n_expert} per layer, {info.n_expert_used} used per token"
                     + (f", {info.n_expert_shared} shared" if info.n_expert_shared else "")
                     + (f", {info.n_layer_dense_lead} leading dense layers" if info.n_layer_dense_lead else "")
                     + f"; one expert {format_size(info.expert_bytes())}")
    lines.append(f"touched/token {format_size(info.bytes_per_token())}"
                 + (" (uniform routing)" if info.is_moe else ""))
    lines.append("bytes by role:")
    total = sum(t.nbytes for t in info.tensors) or 1
    for role, n in info.bytes_by_role().items():
        if n:
            lines.append(f"  {role:<14} {format_size(n):>10}  {100 * n / total:5.1f}%")
    if tensors:
        lines.append(f"tensors ({len(info.tensors)}):")
        lines.append(f"  {'name':<36} {'type':<6} {'shape':<22} {'offset':>14} {'bytes':>12}  role")
        for t in info.tensors:
            shape = "x".join(map(str, t.shape))
            lines.append(f"  {t.name:<36} {t.ggml_type:<6} {shape:<22} {t.offset:>14} {t.nbytes:>12}  {t.role}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hypura_placement import inspect_model

    from .remote_model import fetched_line, is_remote, remote_model_info

    remote = None
    if is_remote(args.model):     # a URL or hf.co/OWNER/REPO[:QUANT]: the header only, by Range requests
        info, remote = remote_model_info(args.model)
    else:
        info = inspect_model(resolve_path(args.model))
    if args.json:
        out = info.summary()
        if remote is not None:
            out["fetched_bytes"], out["requests"], out["urls"] = remote.fetched, remote.requests, remote.urls
        if args.tensors:
            out["tensors"] = [{"name": t.name, "type": t.ggml_type, "shape": list(t.shape), "offset": t.offset,
                               "nbytes": t.nbytes, "role": t.role, "layer": t.layer} for t in info.tensors]
        print(json.dumps(out, indent=2))
    else:
        print(format_info(info, args.tensors))
        if remote is not None:
            print(fetched_line(remote))
    return 0


def register(subparsers) -> None:
    """Add `hypura inspect`."""
    p = subparsers.add_parser("inspect", help="show a GGUF's architecture, size and bytes per role",
                              description=__doc__)
    p.add_argument("model", metavar="MODEL", help="a .gguf file, an https://.../model.gguf URL or hf.co/OWNER/REPO[:QUANT] "
                   "(remote: only the header is fetched, with Range requests)")
    p.add_argument("--tensors", action="store_true", help="list every tensor (type, shape, offset, role)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, command="inspect")

"""`hypura list`, `show`, `rm`, `cp`: Ollama's model commands, against the running server or, when none
answers, the same API served from this process over the local registry (`hypura.client.connect`)."""
from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from ..client import connect
from ..display import human_bytes, human_number, human_time, table

SHOW_PARTS = ("license", "modelfile", "parameters", "system", "template")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", aliases=["ls"], help="list models (the server's, else the local registry's)")
    p.add_argument("prefix", nargs="?", default=None, help="only names that start with this")
    p.set_defaults(func=_list, command="list")

    p = sub.add_parser("show", help="show information for a model")
    p.add_argument("model")
    for part in SHOW_PARTS:
        p.add_argument(f"--{part}", action="store_true", help=f"show the model's {part}")
    p.add_argument("-v", "--verbose", dest="show_verbose", action="store_true",
                   help="also every GGUF metadata key")
    p.set_defaults(func=_show)

    p = sub.add_parser("rm", help="remove models (Hypura's own entries; never Ollama's store or the default)")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.set_defaults(func=_rm)

    p = sub.add_parser("cp", help="copy a model to another name")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=_cp)


def _list(args: argparse.Namespace) -> int:
    with connect() as client:
        models = client.request("GET", "/api/tags")["models"]
    prefix = (args.prefix or "").lower()
    rows = [[m["name"], m.get("digest", "")[:12], human_bytes(m.get("size", 0)), human_time(m.get("modified_at"))]
            for m in models if m["name"].lower().startswith(prefix)]
    table(rows, ["NAME", "ID", "SIZE", "MODIFIED"], out=sys.stdout)
    return 0


def _show(args: argparse.Namespace) -> int:
    chosen = [part for part in SHOW_PARTS if getattr(args, part)]
    if len(chosen) > 1:
        raise ValueError("only one of '--license', '--modelfile', '--parameters', '--system', or '--template' "
                         "can be specified")
    with connect() as client:
        info = client.request("POST", "/api/show", {"model": args.model, "verbose": args.show_verbose})
    if chosen:
        part = chosen[0]
        text = parameters_text(info) if part == "parameters" else str(info.get(part) or "")
        sys.stdout.write(text if part in ("system", "template") else text + "\n")
        return 0
    show_info(info, sys.stdout, verbose=args.show_verbose)
    return 0


def parameters_text(info: dict[str, Any]) -> str:
    """The ``parameters`` field as Ollama prints it: ``name value`` lines (no ``PARAMETER`` keyword)."""
    lines = [ln.removeprefix("PARAMETER ").strip() for ln in str(info.get("parameters") or "").splitlines()]
    pairs = [ln.split(None, 1) for ln in lines if ln]
    return "\n".join(f"{k:<30} {v[0] if v else ''}".rstrip() for k, *v in pairs)


def show_info(info: dict[str, Any], out: IO[str], verbose: bool = False) -> None:
    """`hypura show MODEL` and the chat's ``/show info``: Ollama's sections, in its layout."""
    def section(title: str, rows: list[list[str]]) -> None:
        out.write(f"  {title}\n")
        table([["", *r] for r in rows], out=out)
        out.write("\n")

    mi = info.get("model_info") or {}
    det = info.get("details") or {}
    arch = str(mi.get("general.architecture") or det.get("family") or "")
    rows = [["architecture", arch]]
    if "general.parameter_count" in mi:
        rows.append(["parameters", human_number(float(mi["general.parameter_count"]))])
    else:
        rows.append(["parameters", str(det.get("parameter_size", ""))])
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        if f"{arch}.{key}" in mi:
            rows.append([label, str(mi[f"{arch}.{key}"])])
    rows.append(["quantization", str(det.get("quantization_level", ""))])
    section("Model", rows)
    if info.get("capabilities"):
        section("Capabilities", [[c] for c in info["capabilities"]])
    params = parameters_text(info)
    if params:
        section("Parameters", [ln.split(None, 1) for ln in params.splitlines()])
    if verbose and mi:
        section("Metadata", [[k, _short(v)] for k, v in sorted(mi.items())])
    for key in ("system", "license"):
        text = [ln.strip() for ln in str(info.get(key) or "").splitlines() if ln.strip()]
        if text:
            section(key.capitalize(), [[ln] for ln in text[:2]] + ([["..."]] if len(text) > 2 else []))


def _short(v: Any) -> str:
    if isinstance(v, list):
        return f"[{' '.join(map(str, v[:3]))} ...+{len(v) - 3} more]" if len(v) > 3 else str(v)
    return str(v).lower() if isinstance(v, bool) else str(v)


def _rm(args: argparse.Namespace) -> int:
    with connect() as client:
        for name in args.models:
            client.request("DELETE", "/api/delete", {"model": name})
            print(f"deleted '{name}'")
    return 0


def _cp(args: argparse.Namespace) -> int:
    with connect() as client:
        client.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0

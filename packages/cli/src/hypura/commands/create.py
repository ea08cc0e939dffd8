"""`hypura create MODEL -f Modelfile`: a model name for a GGUF (FROM a path or a name) with its TEMPLATE,
SYSTEM and PARAMETERs, through the server's ``/api/create`` (which parses the Modelfile: one parser).

FROM a path is read relative to the Modelfile's directory, as Ollama does. Without a server the command
uses the API in this process (`hypura.client.local_server`), which may read the file where it lies; a
running server is first asked to read it in place (it can when the file is under its models directory or
``HYPURA_CREATE_PATHS``), and otherwise the file is uploaded as a blob (``/api/blobs``), as ``ollama
create`` always does — a copy into the server's store.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from ..client import Client, ServerError, connect

UNSUPPORTED = {"ADAPTER": "LoRA adapters are not supported by Hypura: create from a merged GGUF file"}
NOT_STORED = ("MESSAGE", "LICENSE")   # accepted by Ollama; Hypura's server keeps neither


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create", help="create a model from a Modelfile (FROM a .gguf or a model name)")
    p.add_argument("model")
    p.add_argument("-f", "--file", default=None, help='name of the Modelfile (default "Modelfile")')
    p.add_argument("-q", "--quantize", default=None, help="not supported: quantize with llama-quantize first")
    p.set_defaults(func=_create)


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """(COMMAND, first line of its value) for each instruction, skipping the bodies of triple-quoted values."""
    out, in_quotes = [], False
    for line in text.split("\n"):
        if in_quotes:
            in_quotes = '"""' not in line
            continue
        parts = line.strip().split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        value = parts[1].strip() if len(parts) > 1 else ""
        if value.startswith('"""') and '"""' not in value[3:]:
            in_quotes = True
        out.append((parts[0].upper(), value))
    return out


def _from_path(value: str, base: Path) -> Path | None:
    """FROM's value as a file path (relative to the Modelfile), or None when it names a model."""
    value = value.strip().strip('"')
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    looks_like_path = value.endswith(".gguf") or value.startswith((".", "/", "~")) or os.sep in value
    if looks_like_path or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"FROM {value}: no such file ({p})")
        return p.resolve()
    return None


def _create(args: argparse.Namespace) -> int:
    if args.quantize:
        raise ValueError("--quantize is not supported: quantize the GGUF with llama-quantize, then create from it")
    path = Path(args.file or "Modelfile").expanduser()
    if not path.is_file():
        raise FileNotFoundError("specified Modelfile wasn't found" + (f": {path}" if args.file else ""))
    text = path.read_text(encoding="utf-8")
    commands = modelfile_commands(text)
    for cmd, _ in commands:
        if cmd in UNSUPPORTED:
            raise ValueError(f"{cmd}: {UNSUPPORTED[cmd]}")
        if cmd in NOT_STORED:
            print(f"warning: {cmd} is not kept by Hypura (ignored)", file=sys.stderr)
    froms = [v for c, v in commands if c == "FROM"]
    if not froms:
        raise ValueError(f"{path}: no FROM line (FROM a .gguf path or a model name)")
    source = _from_path(froms[-1], path.resolve().parent)
    body = {"model": args.model, "modelfile": text}
    with connect(create_roots=[source.parent] if source else []) as client:
        if source is None:
            body["from"] = froms[-1].strip('"')
            _send(client, body)
        elif client.local:
            _send(client, {**body, "from": str(source)})
        else:
            try:
                _send(client, {**body, "from": str(source)})
            except ServerError as exc:
                if exc.status != 400 or "may read" not in str(exc):
                    raise
                digest = upload_blob(client, source)
                _send(client, {**body, "files": {source.name if source.suffix == ".gguf" else
                                                 source.name + ".gguf": digest}})
    return 0


def _send(client: Client, body: dict) -> None:
    for line in client.stream("/api/create", body):
        if line.get("status"):
            print(line["status"], file=sys.stderr)


def upload_blob(client: Client, path: Path) -> str:
    """Hash `path`, then upload it unless the server has that blob already; returns ``sha256:<hex>``."""
    from tqdm import tqdm

    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"hashing {path.name}",
                                      file=sys.stderr) as bar:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            bar.update(len(chunk))
    digest = f"sha256:{h.hexdigest()}"
    try:
        client.request("HEAD", client.blob_path(digest))
        print(f"using existing layer {digest}", file=sys.stderr)
        return digest
    except ServerError as exc:
        if exc.status != 404:
            raise
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"copying {path.name}",
                                      file=sys.stderr) as bar:
        class Reader:   # http.client sends a file object in blocks; count them for the bar
            def read(self, n: int = -1) -> bytes:
                data = f.read(n)
                bar.update(len(data))
                return data
        client.request("POST", client.blob_path(digest), raw=Reader(),
                       headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    return digest

"""Ollama's model endpoints: version, tags, show, ps, create (+ blobs), copy, delete, pull, push."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from hypura_engine import ModelNotFound, default_model_path
from hypura_hardware.files import atomic_write
from hypura_hub import is_remote

from .durations import FOREVER, from_timestamp
from .errors import APIError, bad_request, checked_name, field, json_body, model_name
from .jobs import check_template
from .live import live, page as live_page, tiers_svg, wants_html
from .pulls import remote_pull
from .modelinfo import capabilities, details, digest, model_info, read_info, tag_entry
from .state import options, resolve, state
from .version import __version__

bp = Blueprint("models", __name__)
OLLAMA_COMPAT_VERSION = "0.11.4"   # the Ollama API level served; clients gate features on it
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    if wants_html():          # a browser: the live view of the tiers (API clients keep Ollama's answer)
        return live_page()
    return Response("Ollama is running", mimetype="text/plain")


bp.add_url_rule("/api/hypura/live", "live", live)               # the live page's figures (live.py)
bp.add_url_rule("/api/hypura/tiers.svg", "tiers_svg", tiers_svg)  # a loaded model's tier picture


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> Response:
    return jsonify({"version": OLLAMA_COMPAT_VERSION, "hypura_version": __version__})


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags() -> Response:
    models = []
    for entry in state().registry.list():
        try:
            models.append(tag_entry(entry))
        except (OSError, ValueError):
            continue   # an unreadable file is not listed
    return jsonify({"models": models})


def _info(entry):  # noqa: ANN001, ANN202
    try:
        return read_info(entry.path)
    except (OSError, ValueError) as exc:
        raise APIError(500, str(exc)) from None


@bp.post("/api/show")
def show() -> Response:
    body = json_body()
    entry = resolve(model_name(body))
    info = _info(entry)
    over = state().overrides(entry.name)
    params = over.get("parameters") or {}
    template = over.get("template") or info.template.source
    lines = [f"FROM {entry.path}", f'TEMPLATE """{template}"""']
    if over.get("system"):
        lines.append(f'SYSTEM """{over["system"]}"""')
    pairs = [(k, json.dumps(v) if isinstance(v, str) else v)
             for k, values in params.items() for v in (values if isinstance(values, list) else [values])]
    lines += [f"PARAMETER {k} {v}" for k, v in pairs]
    out: dict[str, Any] = {   # "parameters" as Ollama writes it: name padded to 30, then the value
        "modelfile": "\n".join(lines) + "\n", "parameters": "\n".join(f"{k:<30} {v}" for k, v in pairs),
        "template": template, "details": details(info), "model_info": model_info(info),
        "capabilities": capabilities(info, over.get("template")), "modified_at": from_timestamp(info.mtime)}
    if isinstance(info.kv.get("general.license"), str):
        out["license"] = info.kv["general.license"]
    if over.get("system"):
        out["system"] = over["system"]
    return jsonify(out)


@bp.route("/api/ps", methods=["GET"])
def ps() -> Response:
    models = []   # the workers report their GPU use: this process never initialises a GPU backend
    for slot in state().manager.loaded():
        runner = slot.runner
        if runner is None:
            continue
        info = _info(slot.entry)
        extra = runner.stats()
        size_vram = int(extra.get("gpu_bytes", 0))
        expires = slot.expires_at if slot.expires_at != FOREVER else time.time() + 100 * 365 * 86400
        models.append({"name": slot.entry.name, "model": slot.entry.name, "size": info.size,
                       "digest": digest(slot.entry, info), "details": details(info),
                       "expires_at": from_timestamp(expires), "size_vram": size_vram,
                       "context_length": runner.n_ctx, "hypura": extra})
    return jsonify({"models": models})


def _blob_path(dig: str) -> Path:
    m = _DIGEST.match(dig)
    if not m:
        raise bad_request(f"invalid digest {dig!r} (want sha256:<64 hex digits>)")
    return state().registry.models_dir / "blobs" / f"sha256-{m.group(1)}"


@bp.route("/api/blobs/<dig>", methods=["HEAD"])
def blob_exists(dig: str) -> Response:
    return Response(status=200 if _blob_path(dig).is_file() else 404)


@bp.post("/api/blobs/<dig>")
def blob_upload(dig: str) -> Response:
    target = _blob_path(dig)
    request.max_content_length = state().settings.max_blob  # a model file (None would mean the JSON limit)
    h = hashlib.sha256()
    with atomic_write(target, "wb") as f:       # a digest mismatch leaves no file behind
        while chunk := request.stream.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
        if h.hexdigest() != target.name.removeprefix("sha256-"):
            raise bad_request("digest mismatch")
    return Response(status=201)


_COMMAND = re.compile(r"(\w+)[ \t]+")   # linear: \w and [ \t] are disjoint


def _parse_modelfile(text: str) -> dict[str, Any]:
    """The legacy ``modelfile`` field: FROM, TEMPLATE, SYSTEM, PARAMETER (triple quotes allowed).
    One pass over the lines (no regular expression over the whole body: linear in its size)."""
    out: dict[str, Any] = {"parameters": {}}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].lstrip()
        i += 1
        m = _COMMAND.match(line)
        if not m:
            continue
        cmd, rest = m.group(1).upper(), line[m.end():]
        if rest.startswith('"""'):
            parts, rest = [], rest[3:]
            while (end := rest.find('"""')) < 0 and i < len(lines):
                parts.append(rest)
                rest = lines[i]
                i += 1
            if end < 0:
                raise bad_request(f"modelfile: unterminated triple-quoted {cmd}")
            value = "\n".join(parts + [rest[:end]])
        else:
            value = rest.strip()
        if cmd == "FROM":
            out["from"] = value
        elif cmd in ("TEMPLATE", "SYSTEM", "LICENSE"):
            out[cmd.lower()] = value
        elif cmd == "PARAMETER":
            key, _, raw = value.partition(" ")
            try:
                val: Any = json.loads(raw.strip())
            except ValueError:
                val = raw.strip()
            out["parameters"].setdefault(key, []).append(val)
    out["parameters"] = {k: v[0] if len(v) == 1 and k != "stop" else v for k, v in out["parameters"].items()}
    return out


def _allowed_roots() -> list[str]:
    """The models directory, HYPURA_CREATE_PATHS, and the stores whose files the server already serves by
    name (the embedded default's directory, Ollama's store); symlinks are resolved before the check."""
    st = state()
    roots = [st.registry.models_dir, *st.settings.create_roots, default_model_path().parent]
    if st.registry.ollama_dir is not None:
        roots.append(st.registry.ollama_dir)
    return [os.path.realpath(p) for p in roots]


def _from_path(src: str) -> Path:
    """A FROM path the server may read: a regular file inside the models directory (relative paths are
    taken from there), a configured root (HYPURA_CREATE_PATHS), or the stores it already serves (the
    embedded default's directory, Ollama's). Anything else — outside, missing, a
    directory, a FIFO — is one message that says nothing about what is on the disk."""
    try:
        p = Path(src).expanduser()
        real = os.path.realpath(p if p.is_absolute() else state().registry.models_dir / p)
        inside = any(os.path.commonpath([real, root]) == root for root in _allowed_roots())
        regular = inside and stat.S_ISREG(os.stat(real).st_mode)
    except (OSError, ValueError, RuntimeError):   # a NUL byte, a loop of links, an unknown ~user
        regular = False
    if not regular:
        raise bad_request(f"FROM {src!r}: not a model file this server may read (a .gguf file inside the models "
                          "directory, or a directory listed in HYPURA_CREATE_PATHS)")
    return Path(real)


def _check_spec(spec: dict[str, Any]) -> None:
    """What /api/create stores is checked now, not at every later use: template, system, parameters."""
    if spec.get("template") is not None:
        check_template(spec["template"])
    for key in ("system", "license"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise bad_request(f"{key} must be a string")
    params = spec.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise bad_request("parameters must be an object")
        options({"options": params})


@bp.post("/api/create")
def create() -> Response:
    body = json_body()
    st = state()
    name = model_name(body)
    spec = _parse_modelfile(body["modelfile"]) if isinstance(body.get("modelfile"), str) else {}
    for key in ("from", "template", "system", "parameters"):
        if body.get(key) is not None:
            spec[key] = body[key]
    if body.get("quantize") or body.get("adapters"):
        raise bad_request("quantize and adapters are not supported by Hypura: create from a ready GGUF file")
    files = field(body, "files", dict, {})
    if files:
        ggufs = [d for f, d in files.items() if str(f).endswith(".gguf")]
        if len(ggufs) != 1 or not isinstance(ggufs[0], str):
            raise bad_request("files must name exactly one .gguf blob")
        path = _blob_path(ggufs[0])
        if not path.is_file():
            raise bad_request(f"blob {ggufs[0]} not found: upload it with POST /api/blobs/{ggufs[0]}")
    elif isinstance(spec.get("from"), str) and spec["from"]:
        src = spec["from"]
        if src.endswith(".gguf") or os.path.isabs(os.path.expanduser(src)) or src.startswith("."):
            path = _from_path(src)
        else:
            path = resolve(src).path
    else:
        raise bad_request("create needs 'from' (a model name or a .gguf path on the server) or 'files'")
    _check_spec(spec)
    _info_or_400(path)
    try:
        entry = st.registry.register(name, path)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    st.set_overrides(entry.name, {k: spec[k] for k in ("template", "system", "parameters") if spec.get(k)})
    st.manager.unload(entry.name, wait=5.0)
    lines = [{"status": "parsing GGUF"}, {"status": "writing manifest"}, {"status": "success"}]
    if field(body, "stream", bool, True):
        return Response("".join(json.dumps(x) + "\n" for x in lines), mimetype="application/x-ndjson")
    return jsonify(lines[-1])


def _info_or_400(path: Path) -> None:
    try:
        read_info(path)
    except (OSError, ValueError) as exc:
        detail = str(exc)
        if "magic" in detail:      # not a GGUF at all: say so without echoing the file's first bytes
            detail = f"{path.name}: not a GGUF file"
        raise bad_request(detail) from None


@bp.post("/api/copy")
def copy() -> Response:
    body = json_body()
    st = state()
    src, dst = field(body, "source", str, ""), field(body, "destination", str, "")
    if not src or not dst:
        raise bad_request("source and destination are required")
    checked_name(dst)
    entry = resolve(src)
    try:
        new = st.registry.copy(entry.name, dst)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    st.set_overrides(new.name, st.overrides(entry.name))
    return Response(status=200)


@bp.route("/api/delete", methods=["DELETE", "POST"])
def delete() -> Response:
    body = json_body()
    st = state()
    entry = resolve(model_name(body))
    if entry.source in ("ollama", "default"):
        raise bad_request(f"'{entry.name}' is {'in Ollama' if entry.source == 'ollama' else 'built in'}: "
                          "Hypura does not delete it")
    st.manager.unload(entry.name, wait=5.0)   # a running request keeps it until it ends, then it unloads
    try:
        st.registry.delete(entry.name)
    except ModelNotFound as exc:
        raise APIError(404, str(exc)) from None
    st.set_overrides(entry.name, None)
    return Response(status=200)


@bp.post("/api/pull")
def pull() -> Response:
    body = json_body()
    name = model_name(body)
    if is_remote(name):       # hf.co/OWNER/REPO[:QUANT] or an http(s) URL: download it (pulls.py)
        return remote_pull(name, field(body, "stream", bool, True))
    try:
        entry = state().registry.resolve(name)
    except ModelNotFound:
        raise APIError(404, f"model '{name}' not found: Hypura cannot reach a model registry (it pulls "
                            f"hf.co/OWNER/REPO[:QUANT] names and https URLs of .gguf files); put the .gguf in {state().registry.models_dir} "
                            "or register it with /api/create") from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    lines = [{"status": "pulling manifest"}, {"status": f"using local {entry.path.name}"}, {"status": "success"}]
    if field(body, "stream", bool, True):
        return Response("".join(json.dumps(x) + "\n" for x in lines), mimetype="application/x-ndjson")
    return jsonify(lines[-1])


@bp.post("/api/push")
def push() -> Response:
    raise APIError(501, "push is not supported: Hypura serves local models and reaches no registry")

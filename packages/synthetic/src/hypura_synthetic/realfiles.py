"""Real-format files made by the vendored llama.cpp's own tools: ``llama-quantize`` and ``llama-gguf-split``.

Hypura has no quantizer or splitter of its own: these functions run the binaries of this work tree's llama.cpp
build (``build/llama.cpp/bin``, or ``$HYPURA_LLAMA_BIN``) in a subprocess and raise :class:`ToolError` with the
tool's last output lines when it fails or is missing.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# Types llama-quantize makes without an importance matrix (MXFP4_MOE: experts MXFP4, the rest Q8_0 — gpt-oss).
QUANT_TYPES = ("Q4_K_M", "Q5_K_M", "Q2_K", "IQ4_XS", "Q6_K", "Q8_0", "Q4_0", "MXFP4_MOE")


class ToolError(RuntimeError):
    """A llama.cpp tool is missing or failed."""


def llama_bin() -> Path:
    """The folder of the vendored llama.cpp's binaries."""
    env = os.environ.get("HYPURA_LLAMA_BIN")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "build" / "llama.cpp" / "bin"


def _tool(name: str) -> Path:
    path = llama_bin() / name
    if not os.access(path, os.X_OK):
        raise ToolError(f"{name} not found at {path}: run `make build` (or set HYPURA_LLAMA_BIN)")
    return path


def _run(cmd: list[str], timeout: float) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"{Path(cmd[0]).name} timed out after {timeout:.0f} s") from e
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
        raise ToolError(f"{Path(cmd[0]).name} exited {r.returncode}: {tail}")
    return r.stdout + r.stderr


def quantize(src: str | os.PathLike, dst: str | os.PathLike, qtype: str, *, allow_requantize: bool = False,
             threads: int = 2, timeout: float = 600) -> Path:
    """``llama-quantize src dst qtype``: ``dst`` in ``qtype`` (a name llama-quantize knows, e.g. Q4_K_M)."""
    cmd = [str(_tool("llama-quantize"))] + (["--allow-requantize"] if allow_requantize else [])
    _run(cmd + [str(src), str(dst), qtype, str(threads)], timeout)
    return Path(dst)


def split(src: str | os.PathLike, prefix: str | os.PathLike, *, max_tensors: int | None = None,
          max_size: str | None = None, timeout: float = 600) -> list[Path]:
    """``llama-gguf-split --split``: shards ``{prefix}-0000K-of-0000N.gguf``; returns them in order (the first
    is the path llama.cpp loads the set from)."""
    if (max_tensors is None) == (max_size is None):
        raise ValueError("give exactly one of max_tensors and max_size")
    opt = ["--split-max-tensors", str(max_tensors)] if max_tensors is not None else ["--split-max-size", max_size]
    prefix = Path(prefix)
    for old in prefix.parent.glob(prefix.name + "-*-of-*.gguf"):     # stale shards of an earlier set
        old.unlink()
    _run([str(_tool("llama-gguf-split")), "--split", *opt, str(src), str(prefix)], timeout)
    pat = re.compile(re.escape(prefix.name) + r"-(\d{5})-of-(\d{5})\.gguf$")
    shards = sorted(p for p in prefix.parent.iterdir() if pat.match(p.name))
    if not shards:
        raise ToolError(f"llama-gguf-split wrote no shards named {prefix.name}-*-of-*.gguf")
    return shards

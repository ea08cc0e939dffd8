"""What `/api/tags`, `/api/show` and `/api/ps` say about a model, read from its GGUF header (no load)."""
from __future__ import annotations

import hashlib
import stat
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypura_engine import ChatTemplate, ModelEntry
from hypura_placement import read_header

from .durations import from_timestamp

_lock = threading.Lock()


@dataclass(frozen=True)
class ModelCard:
    """What the API says about a model file (placement's `ModelInfo` is the planner's view): the GGUF
    key/values (typed; token lists elided), parameter count and file facts."""
    path: Path
    kv: dict[str, Any]
    n_params: int
    size: int
    mtime: float

    @property
    def arch(self) -> str:
        return str(self.kv.get("general.architecture", ""))

    @property
    def context_length(self) -> int | None:
        value = self.kv.get(f"{self.arch}.context_length")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def quantization(self) -> str:
        ft = self.kv.get("general.file_type")
        try:
            import gguf

            return gguf.LlamaFileType(int(ft)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except (TypeError, ValueError, ImportError):
            return "unknown"

    @property
    def template(self) -> ChatTemplate:
        return ChatTemplate.for_model(self.kv.get("tokenizer.chat_template"), self.arch, "", "")

    @property
    def fim(self) -> bool:
        return "tokenizer.ggml.fim_pre_token_id" in self.kv and "tokenizer.ggml.fim_suf_token_id" in self.kv


@lru_cache(maxsize=64)
def _read(path: str, size: int, mtime_ns: int) -> ModelCard:
    h = read_header(path)      # placement's bounded reader: a malformed file is one clear ValueError
    return ModelCard(Path(path), h.kv_summary(), h.n_elements, size, mtime_ns / 1e9)


def read_info(path: Path) -> ModelCard:
    """The model's header facts; cached per (path, size, mtime). Raises ValueError on a non-GGUF file."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):    # a FIFO or a device would block the reader
        raise ValueError(f"{path.name}: not a regular file")
    with _lock:
        try:
            return _read(str(path), st.st_size, st.st_mtime_ns)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path.name}: not a readable GGUF file ({exc})") from exc


def context_limit(entry: ModelEntry) -> int | None:
    try:
        return read_info(entry.path).context_length
    except (OSError, ValueError):
        return None


def human_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.2f}K"


def digest(entry: ModelEntry, info: ModelCard) -> str:
    """Ollama's blob digest for its own models; for others a stable id of (path, size, mtime), not a
    content hash (hashing a 100 GB file per listing would be absurd)."""
    if entry.source == "ollama" and entry.path.name.startswith("sha256-"):
        return entry.path.name.removeprefix("sha256-")
    return hashlib.sha256(f"{entry.path}\0{info.size}\0{info.mtime}".encode()).hexdigest()


def details(info: ModelCard) -> dict[str, Any]:
    size_label = info.kv.get("general.size_label")
    return {"parent_model": "", "format": "gguf", "family": info.arch, "families": [info.arch],
            "parameter_size": size_label if isinstance(size_label, str) else human_params(info.n_params),
            "quantization_level": info.quantization}


def capabilities(info: ModelCard, template_source: str | None = None) -> list[str]:
    """Ollama's capability names, from the template (or a per-name override of it) and the vocabulary."""
    out = ["completion"]
    try:
        template = ChatTemplate(template_source) if template_source else info.template
    except ValueError:   # a broken template: it supports nothing (generation reports the error)
        return out
    if template.supports_tools:
        out.append("tools")
    if info.fim:
        out.append("insert")
    if template.supports_thinking:
        out.append("thinking")
    return out


def model_info(info: ModelCard) -> dict[str, Any]:
    out = {k: v for k, v in info.kv.items() if k != "tokenizer.chat_template"}
    out["general.parameter_count"] = info.n_params
    return out


def tag_entry(entry: ModelEntry) -> dict[str, Any]:
    """One `/api/tags` row."""
    info = read_info(entry.path)
    return {"name": entry.name, "model": entry.name, "modified_at": from_timestamp(info.mtime),
            "size": info.size, "digest": digest(entry, info), "details": details(info)}

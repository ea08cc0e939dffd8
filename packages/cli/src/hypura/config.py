"""Configuration: defaults < TOML file < environment < command-line flags, each value with its source.

The file is ``$HYPURA_CONFIG``, else ``$XDG_CONFIG_HOME/hypura/config.toml`` (``~/.config/hypura/config.toml``)::

    gpu_budget = "8G"        # or "auto" (the default: measured free memory minus a safety margin)
    ram_budget = "16GiB"
    models_dir = "~/models"
    host = "0.0.0.0"
    port = 11434
    ctx = 8192
    draft_max = 4            # speculative decoding: at most this many drafted tokens a pass
    [draft]                  # per model (hypura serve): "ngram" or a draft model (name or .gguf path); "*": all
    "gemma3:270m" = "ngram"

Environment: ``HYPURA_GPU_BUDGET``, ``HYPURA_RAM_BUDGET``, ``HYPURA_MODELS``, ``HYPURA_HOST`` and
``OLLAMA_HOST`` (``host[:port]`` or ``http://host:port``, Ollama's format; ``HYPURA_HOST`` wins),
``HYPURA_PORT`` (wins over a port inside a host variable), ``HYPURA_CTX``. Flags: ``--gpu-budget``,
``--ram-budget``, ``--models-dir``, ``--host``, ``--port``, ``--ctx``, ``--draft NAME=DRAFT`` (repeatable; a
bare ``DRAFT`` is for every model; flags add to and override the file's table), ``--draft-max``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypura_hardware.dirs import default_models_dir, user_config_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hypura_placement import parse_size  # the one size parser of Hypura

KEYS = ("gpu_budget", "ram_budget", "models_dir", "host", "port", "ctx", "draft", "draft_max")
FLAGS = {key: "--" + key.replace("_", "-") for key in KEYS}
ENV = {"gpu_budget": "HYPURA_GPU_BUDGET", "ram_budget": "HYPURA_RAM_BUDGET", "models_dir": "HYPURA_MODELS",
       "port": "HYPURA_PORT", "ctx": "HYPURA_CTX"}
HOST_ENV = ("OLLAMA_HOST", "HYPURA_HOST")  # later wins
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_CTX = "127.0.0.1", 11434, 4096

def parse_budget(value: Any) -> int | None:
    """A budget in bytes; ``"auto"`` (or empty) means None: measured free minus a safety margin."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    return parse_size(value)


def _parse_int(name: str, low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], not {value!r}")
        return number
    return parse


def _parse_dir(value: Any) -> Path:
    if not str(value).strip():
        raise ValueError("models_dir must not be empty")
    return Path(os.path.expandvars(str(value))).expanduser()


def _parse_host(value: Any) -> str:
    host = str(value).strip()
    if not host:
        raise ValueError("host must not be empty")
    return host


def _parse_drafts(value: Any) -> dict[str, str]:
    """The ``[draft]`` table ({model: draft}), or ``NAME=DRAFT`` / ``DRAFT`` (every model: ``*``) strings."""
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for text in [value] if isinstance(value, str) else list(value):
            name, sep, spec = str(text).partition("=")
            items.append((name.strip(), spec) if sep else ("*", name))
    out = {}
    for name, spec in items:
        if not isinstance(spec, str) or not spec.strip() or not str(name).strip():
            raise ValueError(f"draft: {name!r} = {spec!r}: want a model name and 'ngram' or a draft model")
        out[str(name).strip()] = spec.strip()
    return out


PARSERS: dict[str, Callable[[Any], Any]] = {
    "gpu_budget": parse_budget, "ram_budget": parse_budget, "models_dir": _parse_dir, "host": _parse_host,
    "port": _parse_int("port", 0, 65535), "ctx": _parse_int("ctx", 1, 1 << 24), "draft": _parse_drafts,
    "draft_max": _parse_int("draft_max", 1, 64)}


def parse_host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]``, ``[v6]:port``, ``:port`` or ``scheme://host[:port][/path]``, as Ollama reads them.

    A port is returned only where one is given, or implied by an ``http``/``https`` scheme (80/443).
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    default_port: int | None = None
    if sep:
        default_port = {"http": 80, "https": 443}.get(scheme.lower())
    else:
        rest = text
    hostport = rest.split("/", 1)[0]
    host, port_text = hostport, ""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"bad host {text!r}: unclosed '['")
        host, port_text = hostport[1:end], hostport[end + 1:].removeprefix(":")
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    port = _parse_int("port", 0, 65535)(port_text) if port_text else default_port
    return host or DEFAULT_HOST, port


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The configuration file: ``$HYPURA_CONFIG`` or ``<user config dir>/config.toml``."""
    env = os.environ if env is None else env
    if env.get("HYPURA_CONFIG"):
        return Path(env["HYPURA_CONFIG"]).expanduser()
    return user_config_dir() / "config.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's known keys, raw; {} if it does not exist. Unknown keys and bad TOML raise ValueError."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    return data


@dataclass(frozen=True)
class Config:
    """Effective settings; ``sources[key]`` says where each came from ("default", "file PATH",
    "env VAR", "flag --x")."""

    gpu_budget: int | None
    ram_budget: int | None
    models_dir: Path
    host: str
    port: int
    ctx: int
    draft: dict[str, str]
    draft_max: int | None
    path: Path
    sources: dict[str, str] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, Any, str]]:
        """(key, value, source) for every setting."""
        for key in KEYS:
            yield key, getattr(self, key), self.sources[key]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"path": ..., "settings": {key: {"value", "source"}}}``."""
        def plain(v: Any) -> Any:
            return str(v) if isinstance(v, Path) else v
        return {"path": str(self.path),
                "settings": {k: {"value": plain(v), "source": s} for k, v, s in self.items()}}


def _set(values: dict, sources: dict, key: str, raw: Any, source: str) -> None:
    try:
        values[key] = PARSERS[key](raw)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    sources[key] = source


def load_config(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                path: Path | None = None) -> Config:
    """Effective configuration. ``flags`` maps keys (``gpu_budget``, ``port`` ...) to command-line values;
    None values and unknown keys are ignored, so ``vars(args)`` can be passed as is."""
    env = os.environ if env is None else env
    path = path or config_path(env)
    values: dict[str, Any] = {"gpu_budget": None, "ram_budget": None, "models_dir": default_models_dir(),
                              "host": DEFAULT_HOST, "port": DEFAULT_PORT, "ctx": DEFAULT_CTX, "draft": {},
                              "draft_max": None}
    sources = dict.fromkeys(KEYS, "default")
    for key, raw in read_config_file(path).items():
        _set(values, sources, key, raw, f"file {path}")
    for var in HOST_ENV:
        if env.get(var, "").strip():
            host, port = parse_host_port(env[var])
            _set(values, sources, "host", host, f"env {var}")
            if port is not None:
                _set(values, sources, "port", port, f"env {var}")
    for key, var in ENV.items():
        if env.get(var, "").strip():
            _set(values, sources, key, env[var], f"env {var}")
    for key, raw in (flags or {}).items():
        if key in PARSERS and raw is not None:
            file_drafts = values["draft"] if key == "draft" else {}
            _set(values, sources, key, raw, f"flag {FLAGS[key]}")
            if key == "draft":            # flags add to the file's table
                values["draft"] = {**file_drafts, **values["draft"]}
    return Config(**values, path=path, sources=sources)

"""Which draft each served model decodes with (speculative decoding, `hypura_engine.speculative`).

`Settings.drafts` maps a model name (``gemma3:270m``; ``*`` for every model) to ``ngram`` (prompt lookup) or
a draft model — a name the registry knows or a ``.gguf`` path — from ``hypura serve --draft NAME=DRAFT`` or
the configuration file's ``[draft]`` table. The Ollama API needs no field of its own: the final chunk of a
generation with a draft carries a ``speculative`` object (tokens per pass, acceptance, drafted and accepted).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from hypura_engine import ModelEntry, Registry, normalize


def _key(name: str) -> str:
    return name if name == "*" else normalize(name)


def check_drafts(drafts: Mapping[str, str]) -> dict[str, str]:
    """Normalised names → draft specs; ValueError for a bad name or an empty draft."""
    out = {}
    for name, spec in drafts.items():
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"draft for {name!r} must be 'ngram' or a draft model (name or .gguf path)")
        out[_key(name)] = spec.strip()
    return out


def draft_lookup(drafts: Mapping[str, str], registry: Registry) -> Callable[[ModelEntry], str | None]:
    """entry → the `LoadOptions.draft` its worker loads with (a draft model's name resolved to its path when
    the model is loaded, so a draft pulled after the server started is found). A draft model equal to the
    target itself is allowed (it accepts everything: a test of the machinery, not a speed-up)."""
    table = check_drafts(drafts)

    def lookup(entry: ModelEntry) -> str | None:
        spec = table.get(entry.name) or table.get("*")
        if spec is None or spec == "ngram" or spec.startswith("ngram:"):
            return spec
        if spec.endswith(".gguf") or Path(spec).expanduser().is_file():
            return str(Path(spec).expanduser())
        return str(registry.resolve(spec).path)

    return lookup

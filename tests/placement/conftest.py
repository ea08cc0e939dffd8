"""Fixtures for the placement tests: small synthetic GGUFs in tmp paths (the real model: ``default_model``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hypura_synthetic import TINY
from hypura_synthetic import write_synthetic as _write


def write_synthetic(path: str | Path, preset: str, **scale) -> Path:
    """Write a synthetic GGUF of ``preset``; without scaling arguments, its tiny version (``TINY``)."""
    return _write(path, preset, **(scale or TINY[preset]))


@pytest.fixture
def synthetic(tmp_path):
    """Factory: ``synthetic("mixtral-8x7b", layers=4, ...)`` → path of a fresh file in tmp_path."""
    counter = iter(range(1 << 30))

    def make(preset: str, **scale) -> Path:
        return write_synthetic(tmp_path / f"{preset}-{next(counter)}.gguf", preset, **scale)
    return make


@pytest.fixture(scope="session")
def header_only_models(tmp_path_factory) -> dict[str, Path]:
    """Full-size header-only files of the planner's "Done when" models."""
    d = tmp_path_factory.mktemp("header-only")
    return {p: _write(d / f"{p}.gguf", p, header_only=True)
            for p in ("qwen2.5-14b", "mixtral-8x7b", "llama3-70b", "kimi-k2")}

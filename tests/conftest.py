"""Shared fixtures: the real default model, the llama.cpp tools of this build."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LLAMA_BIN = ROOT / "build" / "llama.cpp" / "bin"


@pytest.fixture(scope="session")
def default_model() -> Path:
    """Gemma 3 270M Q4_K_M, assembled from its PyPI package into the user cache (sha256-checked)."""
    from hypura_engine import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    if not (LLAMA_BIN / "llama-simple").exists():
        pytest.fail("llama.cpp is not built: run `make build`")
    return LLAMA_BIN

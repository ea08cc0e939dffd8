"""Shared fixtures: the real default model, the llama.cpp tools of this build."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LLAMA_BIN = ROOT / "build" / "llama.cpp" / "bin"


@pytest.fixture(scope="session", autouse=True)
def repacked_experts_dir(tmp_path_factory) -> Path:
    """Expert streaming's repacked-experts files (hypura_engine.planning.repacked_dir) go to a directory of
    this test session, not the user's cache: every session builds them afresh (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("repacked-experts")
    os.environ.setdefault("HYPURA_REPACKED_DIR", str(path))
    return path


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

"""Fixtures for the reliability suite: tiny real GGUF models (written with the synthetic writer) and the
paths of this suite's helpers (`gguf_mutations`, `load_harness`) and of tools/ (`soak`)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (HERE, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dense (llama) and a MoE (mixtral) model of ~1-2 MB that llama.cpp loads and runs in milliseconds."""
    from hypura_synthetic import write_synthetic

    d = tmp_path_factory.mktemp("tiny")
    return {"dense": write_synthetic(d / "dense.gguf", "llama3-70b", layers=2, scale=32, vocab=512),
            "moe": write_synthetic(d / "moe.gguf", "mixtral-8x7b", layers=2, scale=32, vocab=512)}

"""Fixtures of the hub tests: a model host on loopback (`model_host.ModelHost`) and small real GGUF files."""
from __future__ import annotations

from pathlib import Path

import pytest
from model_host import ModelHost


@pytest.fixture()
def host():
    with ModelHost() as h:
        yield h


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small dense GGUFs with different bytes (labelled Q4_K_M and Q8_0 in the repo), and a 3-shard split
    set of the second made by llama.cpp's llama-gguf-split."""
    from hypura_synthetic import write_synthetic
    from hypura_synthetic.realfiles import split

    d = tmp_path_factory.mktemp("hubfiles")
    a = write_synthetic(d / "a.gguf", "llama3-70b", layers=4, scale=16, vocab=512, qtype="Q4_0", seed=1)
    b = write_synthetic(d / "b.gguf", "llama3-70b", layers=4, scale=16, vocab=512, qtype="Q8_0", seed=2)
    shards = split(b, d / "split" / "Tiny-Q8_0", max_tensors=16) if (d / "split").mkdir() is None else []
    return {"a": a, "b": b, **{f"shard{i}": s for i, s in enumerate(shards, 1)}}

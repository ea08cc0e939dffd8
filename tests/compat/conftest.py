"""The tiny model of each architecture (``hypura_synthetic.COMPAT``), made once per session: F16 by the synthetic
writer, every other type by the vendored ``llama-quantize``, splits by ``llama-gguf-split``."""
from __future__ import annotations

from pathlib import Path

import pytest

from hypura_synthetic.compat import make_file


@pytest.fixture(scope="session")
def compat_file(tmp_path_factory, llama_bin):
    folder = tmp_path_factory.mktemp("compat")

    def make(preset: str, qtype: str) -> Path:
        return make_file(folder, preset, qtype)
    return make

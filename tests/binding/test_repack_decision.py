"""Which weights llama.cpp's default CPU load repacks (CPU_REPACK and the other CPU extra buffer types), as the
binding predicts it for an owned load — checked against what llama.cpp itself allocates for the real model."""
from __future__ import annotations

import logging
import re

from gguf import GGUFReader

import hypura_llama as h


def _extra_buffer_sizes_from_llama(path) -> dict[str, float]:
    """MiB per CPU extra buffer type, as llama.cpp's default load logs them."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("llama.cpp"), Collect(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        h.LlamaModel.load(path, h.ModelParams(n_gpu_layers=0, load_mode="mmap", use_extra_bufts=True)).close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    sizes = {}
    for line in lines:
        m = re.search(r"(\S+) model buffer size =\s+([\d.]+) MiB", line)
        if m and m.group(1) not in ("CPU", "CPU_Mapped"):
            sizes[m.group(1)] = float(m.group(2))
    return sizes


def test_predicted_extra_buffers_match_llama_cpps_default_load(default_model):
    predicted: dict[str, int] = {}
    for t in GGUFReader(default_model).tensors:
        if t.name.startswith("token_embd") or len(t.shape) < 2:   # GET_ROWS / non-matrix: never repacked
            continue
        buft = h.cpu_weight_buffer_type(int(t.tensor_type), [int(x) for x in t.shape])
        if buft is not None:
            predicted[buft.name] = predicted.get(buft.name, 0) + int(t.n_bytes)
    logged = _extra_buffer_sizes_from_llama(default_model)
    assert logged, "llama.cpp's default load of Gemma 3 put no weight in a CPU extra buffer type on this machine"
    assert set(predicted) == set(logged)
    for name, mib in logged.items():
        assert abs(predicted[name] / (1 << 20) - mib) < 0.01, (name, predicted[name] / (1 << 20), mib)


def test_plain_types_and_non_matrices_stay_in_plain_memory():
    assert h.cpu_weight_buffer_type(h.lib.GGML_TYPE_F32, [640, 1024]) is None

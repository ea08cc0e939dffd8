"""What a context costs beyond the weights, from llama.cpp's own no_alloc dry run.

llama.cpp reports its KV cache, compute and output buffer sizes only in its log; the dry run loads
the model's metadata (nothing read, nothing allocated), creates a context, and reads the sizes from
the log lines it writes meanwhile.
"""
from __future__ import annotations

import logging
import os
import re

from ._lib import log as llama_log
from .context import ContextParams, LlamaContext
from .errors import LlamaError
from .model import LlamaModel, ModelParams

_SIZE_LINE = re.compile(r"(?P<what>KV|compute|output) buffer size =\s+(?P<mib>[\d.]+) MiB")
_KV_SUMMARY = re.compile(r"llama_kv_cache: size =\s+(?P<mib>[\d.]+) MiB")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def overhead_from_log(lines: list[str]) -> int:
    """Bytes of the buffers a dry run's log lines report: every "KV|compute|output buffer size = N MiB",
    plus the KV cache's summary line (its buffer line says 0.00 MiB under no_alloc)."""
    mib = 0.0
    for line in lines:
        for pattern in (_SIZE_LINE, _KV_SUMMARY):
            match = pattern.search(line)
            if match:
                mib += float(match.group("mib"))
    return int(mib * (1 << 20))


def estimate_overhead(path: str | os.PathLike, ctx: int, n_batch: int = 512) -> int:
    """KV cache + compute + output buffers of a context of `ctx` tokens (capped at the model's training
    context) and `n_batch`, in bytes. Raises LlamaError if the dry run reports no sizes."""
    handler, level = _Collect(), llama_log.level
    llama_log.addHandler(handler)
    llama_log.setLevel(logging.DEBUG)
    try:
        with LlamaModel.load(path, ModelParams(no_alloc=True, load_mode="none", use_extra_bufts=False)) as m:
            n_ctx = max(16, min(ctx, m.n_ctx_train or ctx))
            LlamaContext(m, ContextParams(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch)).close()
    finally:
        llama_log.removeHandler(handler)
        llama_log.setLevel(level)
    total = overhead_from_log(handler.lines)
    if total <= 0:
        raise LlamaError("llama.cpp's dry run reported no buffer sizes")
    return total

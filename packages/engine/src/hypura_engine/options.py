"""How a model is loaded (`LoadOptions`, `RUN_MODES`): pure Python, shared by the server and the runner."""
from __future__ import annotations

from dataclasses import dataclass

RUN_MODES = ("auto", "resident", "dense-stream", "expert-stream")


@dataclass
class LoadOptions:
    mode: str = "auto"                 # auto | resident | dense-stream | expert-stream
    ctx: int = 4096
    gpu_budget: int | None = None      # bytes; None: measured free minus a margin
    ram_budget: int | None = None
    n_threads: int = 0
    n_batch: int = 512
    embeddings: bool = False
    use_extra_bufts: bool = True       # CPU weight repacking (resident loads)
    warm_start: bool = True            # expert streaming: seed the expert cache from earlier runs' routing
    prefetch: bool = False             # expert streaming: read guessed next-layer experts early
    draft: str | None = None           # speculative decoding: "ngram" or a draft GGUF's path (speculative.py)
    draft_max: int | None = None       # at most this many drafted tokens a pass (None: what stays exact, <= 8)
    draft_depth: int | None = None     # a fixed depth, no depth policy (for measurements and tests)
    ctx_reason: str = ""               # why `ctx` is what it is, when the caller fitted it (fit_context)

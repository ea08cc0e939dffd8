"""One tensor of a synthetic model's table: name, ggml shape and what values it gets."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """``shape`` is ggml's ``ne`` (innermost first); ``kind`` picks the values: ``weight`` (quantized matrix),
    ``norm`` (ones), ``bias`` (small zero-mean), ``router`` (F32, skewable), ``zeros``."""
    name: str
    shape: tuple[int, ...]
    kind: str

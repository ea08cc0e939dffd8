"""Exceptions raised by the binding: llama.cpp failures become Python exceptions."""
from __future__ import annotations


class LlamaError(RuntimeError):
    """llama.cpp reported a failure (load, context creation, decode)."""


class DecodeError(LlamaError):
    """llama_decode returned an error code."""

    def __init__(self, code: int, what: str = "llama_decode") -> None:
        reasons = {1: "no KV cache slot for the batch (context full)", 2: "aborted", -1: "invalid batch"}
        super().__init__(f"{what} failed with code {code}: {reasons.get(code, 'compute error')}")
        self.code = code

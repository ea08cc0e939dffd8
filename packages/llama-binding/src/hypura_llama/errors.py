"""Exceptions raised by the binding, and the two checks every wrapper uses on llama.cpp's results."""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class LlamaError(RuntimeError):
    """llama.cpp reported a failure (load, context creation, decode)."""


class DecodeError(LlamaError):
    """llama_decode returned an error code."""

    def __init__(self, code: int, what: str = "llama_decode") -> None:
        reasons = {1: "no KV cache slot for the batch (context full)", 2: "aborted", -1: "invalid batch"}
        super().__init__(f"{what} failed with code {code}: {reasons.get(code, 'compute error')}")
        self.code = code


def check_null(ptr: T, message: str, error: type[Exception] = LlamaError) -> T:
    """`ptr` if it is not a NULL pointer (a cffi NULL is false), else raise `error(message)`."""
    if not ptr:
        raise error(message)
    return ptr


def check_rc(rc: int, message: str, error: type[Exception] = LlamaError) -> int:
    """`rc` if it is not negative, else raise `error(message)`."""
    if rc < 0:
        raise error(message)
    return rc

"""The base of the wrappers that own one llama.cpp/ggml object, and their read-only C properties."""
from __future__ import annotations

from typing import Any, Callable


class Owned:
    """Owns `handle` (None once freed): `close()` frees it once via `_free()`; a context manager."""

    handle: Any = None

    def _free(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.handle is not None:
            self._free()
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def c_property(getter: Callable[[Any], Any], convert: Callable[[Any], Any] = int, of: str = "handle",
               doc: str | None = None) -> property:
    """A property `convert(getter(self.<of>))`: one line per C getter instead of a method each."""
    def get(self):
        return convert(getter(getattr(self, of)))
    return property(get, doc=doc)

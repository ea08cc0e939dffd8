"""The compiled cffi module, and llama.cpp's one-time set-up (backends, log routed to `logging`).

Importing the binding only loads the library: `ensure_init()` sets llama.cpp up, on the first use of
a wrapper that needs it (a model load, the device list, a buffer), never at import.
"""
from __future__ import annotations

import logging
import threading

try:
    from ._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without `make build`
    raise ImportError("hypura_llama's native module is not built: run `make build`") from exc

log = logging.getLogger("llama.cpp")
log.addHandler(logging.NullHandler())
# llama.cpp is chatty and warns about benign model quirks: its INFO/WARN are DEBUG/INFO here
# (shown with -vv / -v); its errors stay errors. Failures also surface as exceptions.
_LEVELS = {
    lib.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    lib.GGML_LOG_LEVEL_INFO: logging.DEBUG,
    lib.GGML_LOG_LEVEL_WARN: logging.INFO,
    lib.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}
_init_lock = threading.Lock()
_initialised = False
_last_level = logging.DEBUG


@ffi.def_extern()
def hypura_py_log(level, text, user_data):  # noqa: ARG001 - signature fixed by ggml
    global _last_level
    if level == lib.GGML_LOG_LEVEL_CONT:
        py_level = _last_level
    else:
        py_level = _last_level = _LEVELS.get(level, logging.DEBUG)
    if log.isEnabledFor(py_level):
        msg = ffi.string(text).decode("utf-8", "replace").rstrip("\n")
        if msg:
            log.log(py_level, "%s", msg)


def ensure_init() -> None:
    """Initialise llama.cpp once per process (backends, log routing); cheap after the first call."""
    global _initialised
    if _initialised:
        return
    with _init_lock:
        if _initialised:
            return
        lib.llama_log_set(lib.hypura_py_log, ffi.NULL)
        lib.llama_backend_init()
        _initialised = True


def cstr(ptr) -> str:
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")


def initialised() -> bool:
    """Whether `ensure_init()` has run in this process."""
    return _initialised

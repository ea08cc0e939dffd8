"""`llama_model_init_from_user`: a model whose weight contents the caller provides, tensor by tensor.

llama.cpp builds the model from a gguf metadata context, allocates every tensor on the devices the
parameters say, and hands each one to a Python callback (`hypura_py_set_tensor`, declared in
decl/shim.h) which fills it, or leaves it for later. A callback that raises gets no further calls;
its exception is re-raised after llama.cpp returns (the half-built model freed), never unwinding
through C.
"""
from __future__ import annotations

import os
from typing import Callable

from ._lib import ensure_init, ffi, lib
from .errors import check_null
from .model import LlamaModel, ModelParams

# on_tensor(ggml_tensor pointer) -> None
TensorHandler = Callable[[object], None]


class _UserLoad:
    def __init__(self, on_tensor: TensorHandler) -> None:
        self.on_tensor = on_tensor
        self.error: BaseException | None = None


def load_from_user(gguf_ctx, on_tensor: TensorHandler, params: ModelParams,
                   path: str | os.PathLike = "<user>") -> LlamaModel:
    """Build a model from `gguf_ctx` (a `struct gguf_context *`), calling `on_tensor(t)` once per tensor
    llama.cpp allocates. Raises what `on_tensor` raised, or LlamaError if llama.cpp refuses."""
    ensure_init()
    load = _UserLoad(on_tensor)
    handle = ffi.new_handle(load)
    model = lib.llama_model_init_from_user(gguf_ctx, lib.hypura_py_set_tensor, handle, params.to_c())
    if load.error is not None:
        if model != ffi.NULL:
            lib.llama_model_free(model)
        raise load.error
    path = os.fspath(path)
    check_null(model, f"{path}: llama.cpp could not build the model (set -vv to see its log)")
    return LlamaModel(model, path, params)


@ffi.def_extern()
def hypura_py_set_tensor(t, userdata):
    load: _UserLoad = ffi.from_handle(userdata)
    if load.error is not None:
        return
    try:
        load.on_tensor(t)
    except BaseException as exc:  # noqa: BLE001 - re-raised after llama.cpp returns
        load.error = exc

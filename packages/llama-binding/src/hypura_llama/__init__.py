"""cffi binding to the vendored llama.cpp/ggml: models, contexts, samplers, backends, the eval-callback filter.

Layers: `_native` (cffi, API mode, built by `make build`) → resource-owning wrappers with
context managers (LlamaModel, LlamaContext, Sampler, Buffer) → used by hypura_streaming and
hypura_engine. llama.cpp's log goes to the `llama.cpp` logger (quiet by default).
"""
from ._lib import ffi, lib
from .backend import Buffer, BufferType, Device, devices, gpu_devices, list_devices, measure_upload_bandwidth
from .context import ContextParams, LlamaContext, default_threads
from .errors import DecodeError, LlamaError
from .evalcb import NOTE, SPLIT, EvalFilter, tensor_name
from .model import LOAD_MODES, LlamaModel, ModelParams
from .sampler import Sampler, SamplingOptions


def backend_name() -> str:
    """The compute backend this build targets: 'cuda', 'metal' or 'cpu'."""
    kinds = {d.name.lower() for d in devices()}
    if any(k.startswith("cuda") for k in kinds):
        return "cuda"
    if any(k.startswith("metal") or k.startswith("mtl") for k in kinds):
        return "metal"
    return "cpu"


def system_info() -> str:
    return ffi.string(lib.llama_print_system_info()).decode()


__all__ = [
    "Buffer", "BufferType", "ContextParams", "DecodeError", "Device", "EvalFilter", "LOAD_MODES",
    "LlamaContext", "LlamaError", "LlamaModel", "ModelParams", "NOTE", "SPLIT", "Sampler",
    "SamplingOptions", "backend_name", "default_threads", "devices", "ffi", "gpu_devices", "lib",
    "list_devices", "measure_upload_bandwidth", "system_info", "tensor_name",
]

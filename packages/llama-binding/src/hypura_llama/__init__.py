"""cffi binding to the vendored llama.cpp/ggml: models, contexts, samplers, backends, the eval-callback filter.

Layers: `_native` (cffi, API mode, built by `make build`) → resource-owning wrappers with
context managers (LlamaModel, LlamaContext, Sampler, Buffer) → used by hypura_streaming and
hypura_engine. Every C→Python callback is here (`evalcb`, `userload`, the log hook in `_lib`).
Importing the binding loads the library only: llama.cpp is initialised on first use
(`ensure_init`). llama.cpp's log goes to the `llama.cpp` logger (quiet by default).
"""
from ._lib import ensure_init, ffi, initialised, lib
from .backend import Buffer, BufferType, Device, cpu_weight_buffer_type, devices, gpu_devices, list_devices, measure_upload_bandwidth
from .context import ContextParams, LlamaContext, default_threads
from .errors import DecodeError, LlamaError, check_null, check_rc
from .evalcb import NOTE, SPLIT, EvalFilter, tensor_name
from .model import LOAD_MODES, LlamaModel, ModelParams, report_bus_errors
from .overhead import estimate_overhead
from .sampler import Sampler, SamplerSettings
from .userload import load_from_user


def backend_name() -> str:
    """The compute backend this build targets: 'cuda', 'metal' or 'cpu'."""
    kinds = {d.name.lower() for d in devices()}
    if any(k.startswith("cuda") for k in kinds):
        return "cuda"
    if any(k.startswith("metal") or k.startswith("mtl") for k in kinds):
        return "metal"
    return "cpu"


def system_info() -> str:
    ensure_init()
    return ffi.string(lib.llama_print_system_info()).decode()


__all__ = [
    "Buffer", "BufferType", "ContextParams", "DecodeError", "Device", "EvalFilter", "LOAD_MODES",
    "LlamaContext", "LlamaError", "LlamaModel", "ModelParams", "NOTE", "SPLIT", "Sampler", "SamplerSettings",
    "backend_name", "check_null", "check_rc", "cpu_weight_buffer_type", "default_threads", "devices", "ensure_init",
    "estimate_overhead", "ffi", "gpu_devices", "initialised", "lib", "list_devices", "load_from_user",
    "measure_upload_bandwidth", "report_bus_errors", "system_info", "tensor_name",
]

"""Generation engine: model registry, chat templates, plan-driven loading and streaming.

`Runner` is one loaded model (resident or streaming, as the plan says) that generates;
`Registry` maps Ollama-style names to GGUF files; both `hypura run` and `hypura serve` use them,
so every generation takes one code path. Importing the package loads no native code: `Runner`
(which needs llama.cpp) is imported on first access, so the server process, which only parses
requests and runs its models in worker processes, never loads the binding.
"""
from .generation import GenerateOptions, GenerationResult, SamplingOptions, TextStream
from .options import RUN_MODES, LoadOptions
from .registry import DEFAULT_MODEL, ModelEntry, ModelNotFound, Registry, default_model_path, normalize
from .templates import ChatTemplate


def __getattr__(name: str):
    if name == "Runner":
        from .runner import Runner

        return Runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChatTemplate", "DEFAULT_MODEL", "GenerateOptions", "GenerationResult", "LoadOptions", "RUN_MODES",
    "ModelEntry", "ModelNotFound", "Registry", "Runner", "SamplingOptions", "TextStream", "default_model_path",
    "normalize",
]

"""Generation engine: model registry, chat templates, plan-driven loading and streaming.

`Runner` is one loaded model (resident or streaming, as the plan says) that generates;
`Registry` maps Ollama-style names to GGUF files; both `hypura run` and `hypura serve` use them,
so every generation takes one code path.
"""
from .generation import GenerateOptions, GenerationResult, TextStream
from .registry import DEFAULT_MODEL, ModelEntry, ModelNotFound, Registry, default_model_path, normalize
from .runner import MODES, LoadOptions, Runner
from .templates import ChatTemplate

__all__ = [
    "ChatTemplate", "DEFAULT_MODEL", "GenerateOptions", "GenerationResult", "LoadOptions", "MODES",
    "ModelEntry", "ModelNotFound", "Registry", "Runner", "TextStream", "default_model_path", "normalize",
]

"""Synthetic GGUF models of real architectures (random weights, real tensor names and shapes).

A test and tool package: the planner (``hypura_placement``) never imports it.
"""
from .data import gain_for_skew, hot_share
from .presets import ARCH_SHAPES, COMPAT, TINY, ArchShape, get_preset
from .tensors import TensorSpec, model_kv, params_estimate, tensor_specs
from .vocab import build_vocab, tokenizer_kv
from .writer import QTYPES, write_synthetic

__all__ = ["ARCH_SHAPES", "ArchShape", "COMPAT", "QTYPES", "TINY", "TensorSpec", "build_vocab", "gain_for_skew", "get_preset",
           "hot_share", "model_kv", "params_estimate", "tensor_specs", "tokenizer_kv", "write_synthetic"]

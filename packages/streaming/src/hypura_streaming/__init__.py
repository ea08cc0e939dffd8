"""Weight streaming: slot pools, direct I/O, the dense-FFN streamer, the expert cache and streamer.

A `StreamSpec` says what to stream (`StreamSpec.from_plan`, or `.dense` / `.experts`); a `Streamer`
(`DenseStreamer`, `ExpertStreamer`, and `HybridStreamer` for both in one model) built from it loads the model whose streamed weights it owns and
gives the eval filter that makes them resident, layer by layer, during the forward pass.
"""
from .base import Streamer, StreamStats
from .cache import CacheStats, ExpertCache
from .dense import DenseStreamer
from .directio import DirectReader, StreamError
from .experts import ExpertStreamer
from .hybrid import HybridStreamer
from .loader import GGUFIndex, OwnedLoad
from .pool import HostSlotPool, LayerLayout
from .spec import DENSE_FFN, EXPS, HOST_SLOT_PAD, StreamSpec

__all__ = ["CacheStats", "DENSE_FFN", "DenseStreamer", "DirectReader", "EXPS", "ExpertCache", "ExpertStreamer",
           "GGUFIndex", "HOST_SLOT_PAD", "HybridStreamer", "HostSlotPool", "LayerLayout", "OwnedLoad", "StreamError", "StreamSpec",
           "StreamStats", "Streamer"]

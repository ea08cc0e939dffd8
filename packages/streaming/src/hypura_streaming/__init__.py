"""Weight streaming: slot pools, direct I/O, the dense-FFN streamer, the expert cache and streamer.

`DenseStreamer(path, layers, n_slots)` loads a model whose streamed FFN weights it owns and
gives the eval filter that makes them resident, layer by layer, during the forward pass.
"""
from .cache import CacheStats, ExpertCache
from .dense import DENSE_FFN, DenseStreamer
from .directio import DirectReader, StreamError
from .experts import EXPS, ExpertStreamer
from .loader import GGUFIndex, OwnedLoad
from .pool import HostSlotPool, LayerLayout

__all__ = ["CacheStats", "DENSE_FFN", "DenseStreamer", "EXPS", "ExpertCache", "ExpertStreamer", "DirectReader", "GGUFIndex", "HostSlotPool", "LayerLayout",
           "OwnedLoad", "StreamError"]

"""Weight streaming: slot pools, direct I/O, the dense-FFN streamer (and, next, the expert cache).

`DenseStreamer(path, layers, n_slots)` loads a model whose streamed FFN weights it owns and
gives the eval filter that makes them resident, layer by layer, during the forward pass.
"""
from .dense import DENSE_FFN, DenseStreamer
from .directio import DirectReader, StreamError
from .loader import GGUFIndex, OwnedLoad
from .pool import HostSlotPool, LayerLayout

__all__ = ["DENSE_FFN", "DenseStreamer", "DirectReader", "GGUFIndex", "HostSlotPool", "LayerLayout",
           "OwnedLoad", "StreamError"]

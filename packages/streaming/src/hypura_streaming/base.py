"""What every streamer is: the interface the engine drives, and the parts the two streamers share.

A streamer is built from a `StreamSpec` (and a device and its own options), loads the model with the
streamed weights it owns (`load_model`), and gives llama.cpp an `eval_filter` whose callback makes
those weights resident just before they are used. The engine sizes its ubatch by `max_ubatch`, reads
`stats()` (the `StreamStats` keys, then the streamer's own) and calls `close()` after the model.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass

from hypura_llama import BufferType, EvalFilter, LlamaModel, ModelParams

from .directio import DirectReader
from .loader import FileMap, OwnedLoad, model_files
from .spec import StreamSpec


@dataclass(frozen=True)
class StreamStats:
    """The statistics both streamers report (the first keys of `Streamer.stats()`)."""

    streamed_layers: int
    pool_bytes: int
    bytes_from_disk: int
    disk_bytes_per_pass: float
    disk_bytes_per_token: float
    disk_gbps: float
    passes: int
    stall_s: float
    direct_io: bool
    device: str
    streamed_ops_on_gpu: bool
    mapped_bytes: int = 0      # tensors computed from the file's page cache (FileMap: the token embedding)

    def as_dict(self) -> dict:
        return asdict(self)


class Streamer(abc.ABC):
    """Streams the weights `spec` names, during llama.cpp's forward passes, on `device` (a GPU
    `hypura_llama.Device`; None: host RAM and the CPU backend)."""

    def __init__(self, spec: StreamSpec, device=None, io_threads: int = 16, direct_io: bool = True,
                 eval_filter: EvalFilter | None = None) -> None:
        """`eval_filter`: a filter shared with another streamer of the same model, whose owner dispatches each
        rule to the streamer that added it (`rules`); None: this streamer's own."""
        self.spec = spec
        self.path = spec.path
        self.layers = list(spec.layers)
        self.device = device
        self.reader = DirectReader(self.path, threads=io_threads, direct=direct_io, shards=model_files(self.path))
        self.file_map = FileMap(self.reader)   # the spec's `mapped` tensors (closed by the streamer's close)
        self.eval_filter = eval_filter if eval_filter is not None else EvalFilter(self._on_node)
        self.rules: set[int] = set()     # the eval-filter rules this streamer added (its nodes)
        self._pos = {layer: k for k, layer in enumerate(self.layers)}   # layer -> its place in a pass
        self._last_k = 1 << 30
        self._load_bytes = 0
        self.passes = 0
        self.stall_s = 0.0

    # -- loading --------------------------------------------------------------------------
    def model_params(self) -> ModelParams:
        """All layers on the compute device; on a GPU the streamed tensors are allocated in host
        memory that is never touched (no VRAM), then re-pointed into the streamer's device memory."""
        overrides = ((self.spec.host_override(), BufferType.cpu()),) if self.device is not None else ()
        # no_host: the CPU override must be plain (never touched) host memory, not llama.cpp's pinned
        # host buffer type, which would pin and fill the whole streamed part in RAM.
        return ModelParams(n_gpu_layers=-1, load_mode="none", use_extra_bufts=False, overrides=overrides,
                           no_host=self.device is not None)

    @abc.abstractmethod
    def load_model(self, params: ModelParams | None = None) -> LlamaModel:
        """Load the model (`params`: `model_params()` by default) with the streamed weights owned here."""

    def _owned_load(self, is_streamed=None, repack: bool | None = None) -> OwnedLoad:
        """A load of this model that leaves `is_streamed` tensors (default: the spec's) to the streamers and computes
        the spec's `mapped` tensors from `file_map`."""
        return OwnedLoad(self.path, self.reader, is_streamed or self.spec.is_streamed, repack=repack,
                         mapped=self.spec.mapped if self.device is None else (), file_map=self.file_map)

    def _loaded(self) -> None:
        """Reads so far were loading: the run's disk figures start now."""
        self._load_bytes = self.reader.bytes_read
        self.reader.clock.busy_s = 0.0

    # -- the eval callback ----------------------------------------------------------------
    def _add_rule(self, prefix: str, suffix: str, action: int, layers=()) -> int:
        r = self.eval_filter.add_rule(prefix, suffix, action, layers=layers)
        self.rules.add(r)
        return r

    @abc.abstractmethod
    def _on_node(self, tensor, ask: bool, rule: int, layer: int) -> None:
        """The eval filter's callback (see hypura_llama.evalcb)."""

    def _start_layer(self, layer: int) -> bool:
        """Note that streamed layer `layer` is next; True when it starts a forward pass (a token or a
        ubatch: layers come in order, so a layer not after the last one begins a new pass), whose
        start checks that the model file is still the one opened."""
        k = self._pos[layer]
        first = k <= self._last_k
        if first:
            self.passes += 1
            self.reader.check_unchanged()
        self._last_k = k
        return first

    @property
    def max_ubatch(self) -> int | None:
        """The largest ubatch the streamer can serve (None: any)."""
        return None

    # -- reporting ------------------------------------------------------------------------
    @property
    def bytes_from_disk(self) -> int:
        """Bytes read since loading (warm start counts as loading)."""
        return self.reader.bytes_read - self._load_bytes

    def _stream_stats(self, pool_bytes: int, per_pass: float, per_token: float, on_gpu: bool) -> StreamStats:
        return StreamStats(streamed_layers=len(self.layers), pool_bytes=pool_bytes,
                           bytes_from_disk=self.bytes_from_disk, disk_bytes_per_pass=per_pass,
                           disk_bytes_per_token=per_token, disk_gbps=round(self.reader.gbps, 3),
                           passes=self.passes, stall_s=round(self.stall_s, 3), direct_io=self.reader.direct,
                           device=self.device.name if self.device is not None else "CPU",
                           streamed_ops_on_gpu=on_gpu, mapped_bytes=self.file_map.nbytes)

    @abc.abstractmethod
    def stats(self) -> dict:
        """`StreamStats` keys, then the streamer's own."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop reads and free the streamer's memory (after the model that points into it)."""

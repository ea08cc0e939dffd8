"""Both streamers in one model: routed experts through the expert cache, and the dense FFN of the layers that
have one (DeepSeek/Kimi/GLM's leading dense layers, llama4's and ernie's interleaved ones) through a slot pool,
when the plan streams both (issue 14: "models with dense FFN layers beside MoE layers stream those too").

One owned load serves both (a tensor is streamed when either spec streams it), then each streamer takes over
its own tensors (`attach`). One eval filter: each rule belongs to the streamer that added it, and its nodes go
to that streamer; their layers are disjoint (a layer's FFN is dense or routed), so neither sees the other's.
"""
from __future__ import annotations

from dataclasses import replace

from hypura_llama import EvalFilter, LlamaModel, ModelParams

from .base import Streamer
from .dense import DenseStreamer
from .experts import ExpertStreamer
from .spec import StreamSpec


class HybridStreamer(Streamer):
    """An `ExpertStreamer` for `spec` (expert-stream) and a `DenseStreamer` for `dense` (dense-stream) over the
    same model; reports as the expert streamer, with the dense part's figures added and under "dense"."""

    def __init__(self, spec: StreamSpec, dense: StreamSpec, device=None, prefetch: bool = False,
                 repack: bool = True, repacked_dir=None) -> None:
        if spec.mode != "expert-stream" or dense.mode != "dense-stream" or set(spec.layers) & set(dense.layers):
            raise ValueError("a hybrid streamer needs an expert-stream spec and a dense-stream spec of other layers")
        self.eval_filter = EvalFilter(self._on_node)
        self.experts = ExpertStreamer(spec, device=device, prefetch=prefetch, eval_filter=self.eval_filter,
                                      repacked_dir=repacked_dir)
        self.dense = DenseStreamer(dense, device=device, repack=repack, eval_filter=self.eval_filter,
                                   repacked_dir=repacked_dir)
        self.spec, self.path, self.device = spec, spec.path, device
        self.layers = sorted(set(spec.layers) | set(dense.layers))
        self.reader = self.experts.reader

    def model_params(self) -> ModelParams:
        params = self.experts.model_params()
        if self.device is None:
            return params
        return replace(params, overrides=tuple(params.overrides) + tuple(self.dense.model_params().overrides))

    def load_model(self, params: ModelParams | None = None) -> LlamaModel:
        params = params or self.model_params()
        owned = self.experts._owned_load(lambda n: self.experts.spec.is_streamed(n) or self.dense.spec.is_streamed(n),
                                         repack=None if self.dense.repack else False)
        try:
            model = owned.load(params)
        except BaseException:
            owned.close()
            raise
        try:
            self.dense.attach(owned, model)
        except BaseException:
            owned.close()
            model.close()
            raise
        return self.experts.attach(owned, model)   # closes `owned` (and the model on an error)

    def _on_node(self, tensor, ask: bool, rule: int, layer: int) -> None:
        (self.dense if rule in self.dense.rules else self.experts)._on_node(tensor, ask, rule, layer)

    @property
    def max_ubatch(self) -> int | None:
        return self.experts.max_ubatch

    # what the engine reads of an expert streamer
    @property
    def n_slots(self) -> int:
        return self.experts.n_slots

    @property
    def n_expert(self) -> int:
        return self.experts.n_expert

    @property
    def layout(self):
        return self.experts.layout

    def routing_counts(self) -> dict[int, dict[int, int]]:
        return self.experts.routing_counts()

    def warm_start(self, counts: dict[int, dict[int, int]]) -> dict:
        return self.experts.warm_start(counts)

    def stats(self) -> dict:
        out, dense = self.experts.stats(), self.dense.stats()
        for key in ("bytes_from_disk", "pool_bytes", "disk_bytes_per_pass", "disk_bytes_per_token", "stall_s"):
            out[key] = out[key] + dense[key] if isinstance(out[key], int) else round(out[key] + dense[key], 3)
        out["streamed_layers"] += dense["streamed_layers"]
        out["dense"] = dense
        return out

    def close(self) -> None:
        try:
            self.experts.close()
        finally:
            self.dense.close()

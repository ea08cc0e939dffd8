"""Expert streaming for MoE models: only the experts the router picks are read from NVMe.

Each streamed layer's fused `ffn_{gate,up,down,gate_up}_exps` tensors, and their per-expert side tensors
(gpt-oss's biases, `.scale`), are re-pointed (before the first graph is built) into one shared cache region
per kind with the expert dimension = `n_slots`, so llama.cpp's MUL_MAT_ID (and ADD_ID) index cache slots
instead of experts; at each layer the router's choice is read, those experts made resident, and the ids
rewritten to slots. A kind's slots fit its largest expert across layers (per-layer K-quant types); on the
CPU, experts of a type llama.cpp's default load repacks are kept repacked, as `--mode resident` has them.

- `layout`: where each expert's bytes are (file, cache slot, RAM-cache slot), in-place flags; pure.
- `memory`: the cache region (CPU_REPACK where repacked), the RAM tier, staging, the resized side tensors.
- `reads`: reading one expert in place or staged; waiting, uploading, giving staging back once.
- `router`: reading the top-k ids and rewriting them to slots.
- `stages`: the order of a layer's expert matmuls, and reads waited for kind by kind just before each.
- `prefetch`: guessing the next layer's experts and reading them early (opt-in).
- `warm`: seeding the caches from earlier runs' routing counts.
- `streamer`: `ExpertStreamer`, the eval-callback state machine; `report`: its statistics.
"""
from ..spec import EXPS
from .streamer import ExpertStreamer

__all__ = ["EXPS", "ExpertStreamer"]

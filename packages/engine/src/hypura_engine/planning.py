"""From a GGUF and the measured hardware to a plan, and from a plan to the streamer that runs it."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
MODE_OF_PLAN = {"full-resident": "resident", "dense-ffn-streaming": "dense-stream",
                "expert-streaming": "expert-stream"}


def hardware_spec():
    """The machine's hardware profile (cached; free memory re-read, cgroup limits honoured)."""
    from hypura_hardware import load_or_measure
    from hypura_placement import HardwareSpec

    from .decode_rate import measure_decode_bps

    return HardwareSpec.from_dict(load_or_measure(progress=False, decode_rate=measure_decode_bps))


def routing_for_plan(info):
    """Earlier runs' routing statistics of a MoE model, for the planner's expert-cache hit rates (None: none,
    or not a MoE model)."""
    if not info.is_moe:
        return None
    from .routing_stats import load_counts

    return load_counts(info.path) or None


def plan_for(path: str | Path, opts):
    """Plan the model at `path` for this machine within the budgets of `opts` (LoadOptions).
    KV cache and compute buffers come from llama.cpp's no_alloc dry run (files with data); for a MoE model
    with warm start on, the expert caches' hit rates come from earlier runs' routing statistics if any."""
    from hypura_llama import estimate_overhead
    from hypura_placement import inspect_model, plan_placement

    info = inspect_model(path)
    overhead = None if info.header_only else estimate_overhead(path, opts.ctx, opts.n_batch)
    routing = routing_for_plan(info) if opts.warm_start else None
    plan = plan_placement(info, hardware_spec(), gpu_budget=opts.gpu_budget, ram_budget=opts.ram_budget,
                          ctx=opts.ctx, resident_overhead=overhead, routing=routing)
    return plan, info


def _gpu_device():
    from hypura_llama import gpu_devices

    devs = gpu_devices()
    return devs[0] if devs else None


REPACKED_DIR_ENV = "HYPURA_REPACKED_DIR"


def repacked_dir() -> Path | None:
    """Where expert streaming keeps the experts the CPU repacks, converted once (hypura_streaming's
    repacked_file): `$HYPURA_REPACKED_DIR` ("off": nowhere, convert them as they are read), else
    `<user cache dir>/repacked`."""
    value = os.environ.get(REPACKED_DIR_ENV, "")
    if value.lower() in ("off", "0", "no", "false"):
        return None
    if value:
        return Path(value)
    from hypura_hardware.dirs import user_cache_dir

    return user_cache_dir() / "repacked"


def open_streamer(path: str | Path, plan, info, mode: str, prefetch: bool = False, repack: bool = True):
    """The streamer that executes `plan` in `mode` ('dense-stream' or 'expert-stream'); `prefetch`: the
    expert streamer's guessed reads; `repack=False`: dense streaming loads CPU weights unrepacked, as a
    resident load with `use_extra_bufts=False` does. What to stream is the spec's reading of the plan
    (StreamSpec.from_plan)."""
    from hypura_streaming import DenseStreamer, ExpertStreamer, HybridStreamer, StreamSpec

    spec = StreamSpec.from_plan(plan, info, mode, path=path)
    device = _gpu_device() if plan.compute_tier == "gpu" else None
    if spec.mode == "dense-stream":
        return DenseStreamer(spec, device=device, repack=repack, repacked_dir=repacked_dir())
    dense = StreamSpec.dense_beside(plan, info, path=path)
    if dense is not None:   # a MoE model whose dense FFN layers stream too
        return HybridStreamer(spec, dense, device=device, prefetch=prefetch, repack=repack,
                              repacked_dir=repacked_dir())
    return ExpertStreamer(spec, device=device, prefetch=prefetch, repacked_dir=repacked_dir())


CTX_STEP = 256         # fitted contexts are whole multiples of this
TEMPLATE_TOKENS = 64   # what a chat template adds around one message, at most, in the families we know
DRAFT_SLACK = 16       # positions a verification pass may hold beyond the last emitted token (drafts)


def fit_context(path: str | Path, texts: list[str], num_predict: int, ceiling: int, chat: bool) -> tuple[int, str]:
    """(context size, reason) for one generation whose prompt is `texts` and that predicts `num_predict`
    tokens: what it can use, in multiples of CTX_STEP, at most `ceiling` (the default or configured size). A
    context it cannot use costs KV cache, and under a tight RAM budget that is expert cache or resident FFN.
    Counts tokens with the model's own tokenizer (a vocabulary-only load)."""
    from hypura_llama import LlamaModel, ModelParams

    if num_predict < 0:
        return ceiling, f"{ceiling}: the default (-n -1 may use any context)"
    with LlamaModel.load(str(path), ModelParams(vocab_only=True)) as m:
        n_prompt = sum(len(m.tokenize(t)) for t in texts if t)
    need = n_prompt + (TEMPLATE_TOKENS if chat else 0) + num_predict + 1 + DRAFT_SLACK
    ctx = min(ceiling, -(-need // CTX_STEP) * CTX_STEP)
    return ctx, (f"{ctx}: fitted to the prompt ({n_prompt} tokens{' + template' if chat else ''}) and -n "
                 f"{num_predict} (no --ctx given; at most {ceiling})")

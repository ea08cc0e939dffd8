"""Tensor roles from tensor names: one small adapter per architecture family, a generic fallback.

llama.cpp names tensors the same way across architectures (``token_embd``, ``blk.N.attn_q``,
``blk.N.ffn_gate_exps`` ...), so the generic rules below cover most of them; an adapter adds what one
family names differently (Gemma's post-norms, gpt-oss' attention sinks, DeepSeek's MLA projections and
expert-probability bias) and says which suffixes the family is known to use. An architecture without an
adapter is still classified by the generic rules, with a warning.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ROLES = ("embedding", "output", "norm", "attention", "router", "shared_expert", "routed_expert", "dense_ffn",
         "other")
STREAMABLE = ("routed_expert", "dense_ffn")   # what the planner may move off the compute device

_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ArchAdapter:
    """Per-family naming: exact suffix → role overrides, and whether the family is MoE."""
    name: str
    overrides: dict[str, str] = field(default_factory=dict)
    moe: bool = False


_COMMON_NORMS = {"attn_norm": "norm", "ffn_norm": "norm", "attn_q_norm": "norm", "attn_k_norm": "norm"}

ADAPTERS: dict[str, ArchAdapter] = {a.name: a for a in (
    ArchAdapter("llama", _COMMON_NORMS, moe=False),          # also Mixtral: llama + *_exps
    ArchAdapter("qwen2", _COMMON_NORMS),
    ArchAdapter("qwen3", _COMMON_NORMS),
    ArchAdapter("qwen2moe", {**_COMMON_NORMS, "ffn_gate_inp_shexp": "shared_expert"}, moe=True),
    ArchAdapter("qwen3moe", _COMMON_NORMS, moe=True),
    # Qwen3.5 MoE: gated delta-net (recurrent) layers between full-attention ones; their ssm_* weights are the
    # layer's token mixer, resident like attention
    ArchAdapter("qwen35moe", {**_COMMON_NORMS, "ffn_gate_inp_shexp": "shared_expert", "post_attention_norm": "norm",
                              "ssm_norm": "norm", **{k: "attention" for k in ("ssm_a", "ssm_alpha", "ssm_beta",
                                                                               "ssm_conv1d", "ssm_dt", "ssm_out")}},
                moe=True),
    ArchAdapter("deepseek2", {**_COMMON_NORMS, "attn_q_a_norm": "norm", "attn_kv_a_norm": "norm",
                              "attn_q_a": "attention", "attn_q_b": "attention", "attn_kv_a_mqa": "attention",
                              "attn_k_b": "attention", "attn_v_b": "attention", "attn_kv_b": "attention",
                              "exp_probs_b": "router"}, moe=True),
    ArchAdapter("gemma3", {**_COMMON_NORMS, "post_attention_norm": "norm", "post_ffw_norm": "norm"}),
    ArchAdapter("gemma2", {**_COMMON_NORMS, "post_attention_norm": "norm", "post_ffw_norm": "norm"}),
    ArchAdapter("gpt-oss", {**_COMMON_NORMS, "attn_sinks": "attention", "post_attention_norm": "norm"}, moe=True),
)}


def _generic(stem: str) -> str:
    """Role of a per-layer tensor stem (``ffn_up_exps``) or a global one (``token_embd``) by name alone."""
    if stem in ("token_embd", "per_layer_token_embd", "token_types", "position_embd"):
        return "embedding"
    if stem == "output":
        return "output"
    if stem.endswith("_exps") or stem.endswith("_exps_b") or "_exps." in stem:
        return "routed_expert"
    if stem.endswith("_shexp") or "_shexp" in stem:
        return "shared_expert"
    if stem.startswith("ffn_gate_inp") or stem in ("exp_probs_b", "ffn_exp_probs_b"):
        return "router"
    if "norm" in stem:
        return "norm"
    if stem.startswith("attn_") or stem.startswith("attn") or stem in ("wq", "wk", "wv", "wo"):
        return "attention"
    if stem in ("ffn_gate", "ffn_up", "ffn_down", "ffn_gate_up"):
        return "dense_ffn"
    return "other"


def split_name(name: str) -> tuple[int | None, str, str]:
    """``blk.3.ffn_up_exps.weight`` → (3, "ffn_up_exps", "weight"); globals have layer None."""
    layer = None
    m = _LAYER.match(name)
    if m:
        layer, name = int(m.group(1)), m.group(2)
    stem, _, kind = name.rpartition(".")
    if not stem:
        stem, kind = kind, ""
    return layer, stem, kind


def tensor_role(name: str, arch: str) -> str:
    """The role of tensor ``name`` in a model of architecture ``arch`` (see :data:`ROLES`)."""
    layer, stem, _ = split_name(name)
    adapter = ADAPTERS.get(arch)
    if adapter and stem in adapter.overrides:
        return adapter.overrides[stem]
    if layer is None and stem == "output_norm":
        return "norm"
    return _generic(stem)


def classify(names: list[str], arch: str) -> dict[str, str]:
    """Roles of all tensors; warns once when ``arch`` has no adapter (roles then come from names)."""
    if arch not in ADAPTERS:
        log.warning("architecture %r is not in the role table: tensor roles inferred from names", arch)
    return {n: tensor_role(n, arch) for n in names}

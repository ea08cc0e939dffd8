"""The tensor table of an :class:`ArchShape` and its GGUF key/values, in llama.cpp's names and ``ne`` order."""
from __future__ import annotations

import math
from typing import Any

from . import archs
from .presets import ArchShape
from .tensor_spec import TensorSpec


def _attention(s: ArchShape, i: int) -> list[TensorSpec]:
    p, E = f"blk.{i}.", s.n_embd
    out = [TensorSpec(p + "attn_norm.weight", (E,), "norm")]
    if s.kv_lora_rank:                                  # deepseek2 MLA
        k_mla = s.qk_nope + s.qk_rope
        out += [TensorSpec(p + "attn_q_a_norm.weight", (s.q_lora_rank,), "norm"),
                TensorSpec(p + "attn_kv_a_norm.weight", (s.kv_lora_rank,), "norm"),
                TensorSpec(p + "attn_q_a.weight", (E, s.q_lora_rank), "weight"),
                TensorSpec(p + "attn_q_b.weight", (s.q_lora_rank, s.n_head * k_mla), "weight"),
                TensorSpec(p + "attn_kv_a_mqa.weight", (E, s.kv_lora_rank + s.qk_rope), "weight"),
                TensorSpec(p + "attn_k_b.weight", (s.qk_nope, s.kv_lora_rank, s.n_head), "weight"),
                TensorSpec(p + "attn_v_b.weight", (s.kv_lora_rank, s.v_head, s.n_head), "weight"),
                TensorSpec(p + "attn_output.weight", (s.n_head * s.v_head, E), "weight")]
        return out
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out += [TensorSpec(p + "attn_q.weight", (E, q), "weight"), TensorSpec(p + "attn_k.weight", (E, kv), "weight"),
            TensorSpec(p + "attn_v.weight", (E, kv), "weight"), TensorSpec(p + "attn_output.weight", (q, E), "weight")]
    if s.qkv_bias:
        out += [TensorSpec(p + "attn_q.bias", (q,), "bias"), TensorSpec(p + "attn_k.bias", (kv,), "bias"),
                TensorSpec(p + "attn_v.bias", (kv,), "bias")]
    if s.qk_norm:
        out += [TensorSpec(p + "attn_q_norm.weight", (s.head_dim,), "norm"),
                TensorSpec(p + "attn_k_norm.weight", (s.head_dim,), "norm")]
    return out


def _ffn(s: ArchShape, i: int) -> list[TensorSpec]:
    p, E = f"blk.{i}.", s.n_embd
    out = [TensorSpec(p + "ffn_norm.weight", (E,), "norm")]
    if not s.moe or i < s.n_dense_lead:
        return out + [TensorSpec(p + "ffn_gate.weight", (E, s.n_ff), "weight"),
                      TensorSpec(p + "ffn_up.weight", (E, s.n_ff), "weight"),
                      TensorSpec(p + "ffn_down.weight", (s.n_ff, E), "weight")]
    F, X = s.n_ff_exp, s.n_expert
    out += [TensorSpec(p + "ffn_gate_inp.weight", (E, X), "router"),
            TensorSpec(p + "ffn_gate_exps.weight", (E, F, X), "weight"),
            TensorSpec(p + "ffn_up_exps.weight", (E, F, X), "weight"),
            TensorSpec(p + "ffn_down_exps.weight", (F, E, X), "weight")]
    if s.exp_probs_bias:
        out.append(TensorSpec(p + "exp_probs_b.bias", (X,), "zeros"))
    if s.n_expert_shared:
        Fs = F * s.n_expert_shared
        out += [TensorSpec(p + "ffn_gate_shexp.weight", (E, Fs), "weight"),
                TensorSpec(p + "ffn_up_shexp.weight", (E, Fs), "weight"),
                TensorSpec(p + "ffn_down_shexp.weight", (Fs, E), "weight")]
    return out


def tensor_specs(s: ArchShape) -> list[TensorSpec]:
    """Every tensor of the model, in file order (embedding, layers, output)."""
    if s.arch in archs.LAYOUTS:
        return archs.tensor_specs(s)
    out = [TensorSpec("token_embd.weight", (s.n_embd, s.n_vocab), "weight")]
    for i in range(s.n_layer):
        out += _attention(s, i) + _ffn(s, i)
    return out + [TensorSpec("output_norm.weight", (s.n_embd,), "norm"),
                  TensorSpec("output.weight", (s.n_embd, s.n_vocab), "weight")]


def params_estimate(s: ArchShape) -> int:
    """Parameter count of ``s`` (for the writer tool's summary line)."""
    return sum(math.prod(t.shape) for t in tensor_specs(s))


def model_kv(s: ArchShape) -> dict[str, Any]:
    """The architecture's GGUF key/values (without ``general.architecture`` and the tokenizer)."""
    a = s.arch
    kv: dict[str, Any] = {
        f"{a}.context_length": s.ctx, f"{a}.embedding_length": s.n_embd, f"{a}.block_count": s.n_layer,
        f"{a}.feed_forward_length": s.n_ff, f"{a}.attention.head_count": s.n_head,
        f"{a}.attention.head_count_kv": s.n_head_kv, f"{a}.attention.layer_norm_rms_epsilon": float(s.rms_eps),
        f"{a}.rope.freq_base": float(s.rope_base), f"{a}.vocab_size": s.n_vocab}
    if s.kv_lora_rank:
        kv.update({f"{a}.attention.q_lora_rank": s.q_lora_rank, f"{a}.attention.kv_lora_rank": s.kv_lora_rank,
                   f"{a}.attention.key_length": s.kv_lora_rank + s.qk_rope,
                   f"{a}.attention.value_length": s.kv_lora_rank,
                   f"{a}.attention.key_length_mla": s.qk_nope + s.qk_rope,
                   f"{a}.attention.value_length_mla": s.v_head, f"{a}.rope.dimension_count": s.qk_rope})
    else:
        kv.update({f"{a}.attention.key_length": s.head_dim, f"{a}.attention.value_length": s.head_dim,
                   f"{a}.rope.dimension_count": s.head_dim})
    if s.moe:
        kv.update({f"{a}.expert_count": s.n_expert, f"{a}.expert_used_count": s.n_expert_used})
        if s.arch != "llama":
            kv[f"{a}.expert_feed_forward_length"] = s.n_ff_exp
    if s.arch == "deepseek2":
        kv.update({f"{a}.leading_dense_block_count": s.n_dense_lead, f"{a}.expert_shared_count": s.n_expert_shared,
                   f"{a}.expert_weights_scale": float(s.expert_weights_scale), f"{a}.expert_weights_norm": True,
                   f"{a}.expert_gating_func": s.expert_gating_func})
    if a in archs.LAYOUTS:
        kv.update(archs.family_kv(s))
    return kv

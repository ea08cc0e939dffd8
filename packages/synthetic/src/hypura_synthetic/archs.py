"""Layer layouts of the MoE families beyond llama/qwen2/qwen3moe/deepseek2: one function per
``general.architecture``, naming and shaping tensors exactly as ``vendor/llama.cpp/src/models/<arch>.cpp``
creates them (``load_arch_tensors``), plus the family's own GGUF keys (``load_arch_hparams``).

Kinds as in :class:`~hypura_synthetic.tensors.TensorSpec`; ``conv`` (F32 N(0, 1/k)) and ``neg`` (F32 -1, the
delta-net decay ``-exp(A_log)``) exist only here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .presets import ArchShape
from .tensor_spec import TensorSpec as T


def _attn(s: ArchShape, p: str, *, q_mult: int = 1, qk_norm: str = "", o_bias: bool = False) -> list[T]:
    """Separate Q/K/V/O (``create_tensor_qkv``); ``q_mult`` 2 for a gated Q; ``qk_norm`` "head" (per head) or
    "full" (over all heads, MiniMax/OLMoE)."""
    E, hd = s.n_embd, s.head_dim
    q, kv = s.n_head * hd, s.n_head_kv * hd
    out = [T(p + "attn_q.weight", (E, q * q_mult), "weight"), T(p + "attn_k.weight", (E, kv), "weight"),
           T(p + "attn_v.weight", (E, kv), "weight"), T(p + "attn_output.weight", (q, E), "weight")]
    if s.qkv_bias:
        out += [T(p + "attn_q.bias", (q * q_mult,), "bias"), T(p + "attn_k.bias", (kv,), "bias"),
                T(p + "attn_v.bias", (kv,), "bias")]
    if o_bias:
        out.append(T(p + "attn_output.bias", (E,), "bias"))
    if qk_norm == "head":
        out += [T(p + "attn_q_norm.weight", (hd,), "norm"), T(p + "attn_k_norm.weight", (hd,), "norm")]
    elif qk_norm == "full":
        out += [T(p + "attn_q_norm.weight", (q,), "norm"), T(p + "attn_k_norm.weight", (kv,), "norm")]
    return out


def _experts(s: ArchShape, p: str, *, probs_bias: bool = False) -> list[T]:
    E, F, X = s.n_embd, s.n_ff_exp, s.n_expert
    out = [T(p + "ffn_gate_inp.weight", (E, X), "router"),
           T(p + "ffn_gate_exps.weight", (E, F, X), "weight"), T(p + "ffn_up_exps.weight", (E, F, X), "weight"),
           T(p + "ffn_down_exps.weight", (F, E, X), "weight")]
    if probs_bias:
        out.append(T(p + "exp_probs_b.bias", (X,), "zeros"))
    return out


def _shared(s: ArchShape, p: str, width: int, *, gate: bool = False) -> list[T]:
    E = s.n_embd
    out = [T(p + "ffn_gate_inp_shexp.weight", (E,), "bias")] if gate else []
    return out + [T(p + "ffn_gate_shexp.weight", (E, width), "weight"),
                  T(p + "ffn_up_shexp.weight", (E, width), "weight"),
                  T(p + "ffn_down_shexp.weight", (width, E), "weight")]


def _dense(s: ArchShape, p: str) -> list[T]:
    E, F = s.n_embd, s.n_ff
    return [T(p + "ffn_gate.weight", (E, F), "weight"), T(p + "ffn_up.weight", (E, F), "weight"),
            T(p + "ffn_down.weight", (F, E), "weight")]


def _norm(p: str, name: str, s: ArchShape) -> T:
    return T(p + name + ".weight", (s.n_embd,), "norm")


def qwen2moe(s: ArchShape, i: int, p: str) -> list[T]:
    return ([_norm(p, "attn_norm", s)] + _attn(s, p) + [_norm(p, "ffn_norm", s)] + _experts(s, p)
            + _shared(s, p, s.n_ff_shexp, gate=True))


def qwen35moe(s: ArchShape, i: int, p: str) -> list[T]:
    out = [_norm(p, "attn_norm", s), _norm(p, "post_attention_norm", s)]
    if (i + 1) % s.full_attn_every == 0:                        # full (gated) attention
        out += _attn(s, p, q_mult=2, qk_norm="head")
    else:                                                        # gated delta net
        E, hd, kh, vh = s.n_embd, s.ssm_head, s.ssm_k_heads, s.ssm_v_heads
        key, value = hd * kh, hd * vh
        out += [T(p + "attn_qkv.weight", (E, 2 * key + value), "weight"), T(p + "attn_gate.weight", (E, value), "weight"),
                T(p + "ssm_conv1d.weight", (s.ssm_conv, 2 * key + value), "conv"), T(p + "ssm_dt.bias", (vh,), "bias"),
                T(p + "ssm_a", (vh,), "neg"), T(p + "ssm_beta.weight", (E, vh), "weight"),
                T(p + "ssm_alpha.weight", (E, vh), "weight"), T(p + "ssm_norm.weight", (hd,), "norm"),
                T(p + "ssm_out.weight", (value, E), "weight")]
    return out + _experts(s, p) + _shared(s, p, s.n_ff_shexp, gate=True)


def glm4moe(s: ArchShape, i: int, p: str) -> list[T]:
    out = ([_norm(p, "attn_norm", s)] + _attn(s, p, qk_norm="head" if s.qk_norm else "")
           + [_norm(p, "post_attention_norm", s)])
    if i < s.n_dense_lead:
        return out + _dense(s, p)
    return out + _experts(s, p, probs_bias=True) + _shared(s, p, s.n_ff_exp * s.n_expert_shared)


def gpt_oss(s: ArchShape, i: int, p: str) -> list[T]:
    E, F, X = s.n_embd, s.n_ff_exp, s.n_expert
    return ([_norm(p, "attn_norm", s), _norm(p, "post_attention_norm", s)] + _attn(s, p, o_bias=True)
            + [T(p + "attn_sinks.weight", (s.n_head,), "bias")] + _experts(s, p)
            + [T(p + "ffn_gate_inp.bias", (X,), "bias"), T(p + "ffn_gate_exps.bias", (F, X), "bias"),
               T(p + "ffn_up_exps.bias", (F, X), "bias"), T(p + "ffn_down_exps.bias", (E, X), "bias")])


def llama4(s: ArchShape, i: int, p: str) -> list[T]:
    out = [_norm(p, "attn_norm", s)] + _attn(s, p) + [_norm(p, "ffn_norm", s)]
    if (i + 1) % s.moe_every == 0:
        return out + _experts(s, p) + _shared(s, p, s.n_ff_exp)
    return out + _dense(s, p)


def minimax_m2(s: ArchShape, i: int, p: str) -> list[T]:
    return ([_norm(p, "attn_norm", s)] + _attn(s, p, qk_norm="full") + [_norm(p, "ffn_norm", s)]
            + _experts(s, p, probs_bias=True))


def ernie4_5_moe(s: ArchShape, i: int, p: str) -> list[T]:
    out = [_norm(p, "attn_norm", s)] + _attn(s, p) + [_norm(p, "ffn_norm", s)]
    if i >= s.n_dense_lead and (i + 1) % s.moe_every == 0:
        return out + _experts(s, p, probs_bias=True) + _shared(s, p, s.n_ff_shexp)
    return out + _dense(s, p)


def dots1(s: ArchShape, i: int, p: str) -> list[T]:
    out = [_norm(p, "attn_norm", s)] + _attn(s, p, qk_norm="head") + [_norm(p, "ffn_norm", s)]
    if i < s.n_dense_lead:
        return out + _dense(s, p)
    return out + _experts(s, p, probs_bias=True) + _shared(s, p, s.n_ff_exp * s.n_expert_shared)


def hunyuan_moe(s: ArchShape, i: int, p: str) -> list[T]:
    return ([_norm(p, "attn_norm", s)] + _attn(s, p, qk_norm="head") + [_norm(p, "ffn_norm", s)] + _experts(s, p)
            + _shared(s, p, s.n_ff_shexp))


def granitemoe(s: ArchShape, i: int, p: str) -> list[T]:
    return [_norm(p, "attn_norm", s)] + _attn(s, p) + [_norm(p, "ffn_norm", s)] + _experts(s, p)


def olmoe(s: ArchShape, i: int, p: str) -> list[T]:
    return [_norm(p, "attn_norm", s)] + _attn(s, p, qk_norm="full") + [_norm(p, "ffn_norm", s)] + _experts(s, p)


LAYOUTS: dict[str, Callable[[ArchShape, int, str], list[T]]] = {
    "qwen2moe": qwen2moe, "qwen35moe": qwen35moe, "glm4moe": glm4moe, "gpt-oss": gpt_oss, "llama4": llama4,
    "minimax-m2": minimax_m2, "ernie4_5-moe": ernie4_5_moe, "dots1": dots1, "hunyuan-moe": hunyuan_moe,
    "granitemoe": granitemoe, "olmoe": olmoe}


def tensor_specs(s: ArchShape) -> list[T]:
    """Every tensor of a model of one of :data:`LAYOUTS`' families, in file order."""
    out = [T("token_embd.weight", (s.n_embd, s.n_vocab), "weight")]
    for i in range(s.n_layer):
        out += LAYOUTS[s.arch](s, i, f"blk.{i}.")
    out.append(T("output_norm.weight", (s.n_embd,), "norm"))
    if not s.tied:
        out.append(T("output.weight", (s.n_embd, s.n_vocab), "weight"))
    return out


def family_kv(s: ArchShape) -> dict[str, Any]:
    """The family's keys beyond the common ones of :func:`~hypura_synthetic.tensors.model_kv`."""
    a = s.arch
    kv: dict[str, Any] = {}
    if s.rope_dim:
        kv[f"{a}.rope.dimension_count"] = s.rope_dim
    if s.n_ff_shexp:
        kv[f"{a}.expert_shared_feed_forward_length"] = s.n_ff_shexp
    if s.n_expert_shared:
        kv[f"{a}.expert_shared_count"] = s.n_expert_shared
    if s.n_dense_lead or a in ("glm4moe", "dots1"):
        kv[f"{a}.leading_dense_block_count"] = s.n_dense_lead
    if s.moe_every:
        kv[f"{a}.interleave_moe_layer_step"] = s.moe_every
    if s.expert_gating_func:
        kv[f"{a}.expert_gating_func"] = s.expert_gating_func
    if s.expert_weights_scale:
        kv.update({f"{a}.expert_weights_scale": float(s.expert_weights_scale), f"{a}.expert_weights_norm": True})
    if s.swa:
        kv[f"{a}.attention.sliding_window"] = s.swa
    if s.ssm_v_heads:
        kv.update({f"{a}.ssm.conv_kernel": s.ssm_conv, f"{a}.ssm.inner_size": s.ssm_head * s.ssm_v_heads,
                   f"{a}.ssm.state_size": s.ssm_head, f"{a}.ssm.time_step_rank": s.ssm_v_heads,
                   f"{a}.ssm.group_count": s.ssm_k_heads, f"{a}.full_attention_interval": s.full_attn_every})
    kv.update({f"{a}.{k}": v for k, v in s.extra_kv})
    return kv

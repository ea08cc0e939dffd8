"""Shapes of real architectures, as llama.cpp (the vendored version) loads them, and how to scale them down.

Figures are from each model's published ``config.json`` (Llama-3.3-70B-Instruct, Qwen2.5-14B, Mixtral-8x7B-v0.1,
Qwen3-30B-A3B, DeepSeek-V3, Kimi-K2-Instruct); tensor names and shapes follow ``src/models/{llama,qwen2,
qwen3moe,deepseek2}.cpp`` of vendor/llama.cpp (DeepSeek's MLA as the current converter writes it: split
``attn_k_b``/``attn_v_b``, one KV head of ``kv_lora_rank + rope`` width).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ArchShape:
    """Hyper-parameters of one model; ``scaled`` derives a small model of the same structure."""
    preset: str
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    ctx: int
    rope_base: float
    rms_eps: float
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_expert_shared: int = 0
    n_dense_lead: int = 0
    qkv_bias: bool = False
    qk_norm: bool = False
    q_lora_rank: int = 0        # deepseek2 (MLA)
    kv_lora_rank: int = 0
    qk_nope: int = 0
    qk_rope: int = 0
    v_head: int = 0
    expert_weights_scale: float = 0.0
    expert_gating_func: int = 0  # 1 softmax, 2 sigmoid
    exp_probs_bias: bool = False
    # Fields below serve the architectures of ``archs.py`` (their defaults leave the older presets unchanged).
    row_align: int = 32          # widths are rounded to multiples of this when scaled (256: K-quants apply)
    n_ff_shexp: int = 0          # shared-expert FFN width where the family gives it directly
    moe_every: int = 0           # llama4 / ernie: every k-th layer is MoE (interleave_moe_layer_step)
    rope_dim: int = 0            # partial rotary width (0: the head size)
    swa: int = 0                 # sliding-window size (gpt-oss)
    ssm_k_heads: int = 0         # qwen35moe gated delta-net: key heads (group count), value heads, head size,
    ssm_v_heads: int = 0         # conv kernel, and every k-th layer full attention
    ssm_head: int = 0
    ssm_conv: int = 0
    full_attn_every: int = 0
    tied: bool = False           # no output.weight: the embedding is reused
    extra_kv: tuple = ()         # (key suffix, value) pairs written as ``{arch}.{suffix}``

    @property
    def moe(self) -> bool:
        return self.n_expert > 0

    def scaled(self, layers: int | None = None, scale: int = 1, experts: int | None = None,
               experts_used: int | None = None, vocab: int | None = None, dense_lead: int | None = None,
               align: int | None = None) -> ArchShape:
        """A smaller model of the same structure: ``scale`` divides widths and head counts (head sizes kept,
        widths rounded to multiples of ``align``, default ``row_align``, so quantized rows stay whole);
        ``layers``/``experts``/``vocab`` replace counts."""
        a = self.row_align if align is None else align

        def w(x: int) -> int:
            return x if scale == 1 or x == 0 else max(a, int(round(x / scale / a)) * a)

        def h(x: int) -> int:
            return max(1, x // scale)
        n_head = h(self.n_head)
        n_head_kv = max(1, min(n_head, h(self.n_head_kv))) if not self.kv_lora_rank else 1
        while n_head % n_head_kv:
            n_head_kv -= 1
        n_layer = self.n_layer if layers is None else layers
        n_expert = self.n_expert if experts is None else experts
        used = self.n_expert_used if experts_used is None else experts_used
        lead = self.n_dense_lead if dense_lead is None else dense_lead
        s = replace(self, n_layer=n_layer, n_embd=w(self.n_embd), n_ff=w(self.n_ff), n_head=n_head,
                    n_head_kv=n_head_kv, n_ff_exp=w(self.n_ff_exp), q_lora_rank=w(self.q_lora_rank),
                    kv_lora_rank=w(self.kv_lora_rank), n_vocab=self.n_vocab if vocab is None else vocab,
                    n_expert=n_expert, n_expert_used=min(used, n_expert), n_dense_lead=min(lead, n_layer))
        if self.n_ff_shexp or self.ssm_v_heads:
            s = replace(s, n_ff_shexp=w(self.n_ff_shexp), ssm_k_heads=h(self.ssm_k_heads),
                        ssm_v_heads=h(self.ssm_v_heads), row_align=a)
        if self.moe and (s.n_expert < 1 or s.n_expert_used < 1):
            raise ValueError(f"{self.preset}: a MoE model needs at least one expert and one used expert")
        if n_layer < 1 or s.n_vocab < 300:
            raise ValueError("need at least 1 layer and a vocabulary of at least 300 tokens")
        return s


ARCH_SHAPES: dict[str, ArchShape] = {s.preset: s for s in (
    ArchShape("llama3-70b", "llama", "Llama-3.3-70B (synthetic)", 80, 8192, 28672, 64, 8, 128, 128256, 131072,
              500000.0, 1e-5),
    ArchShape("qwen2.5-14b", "qwen2", "Qwen2.5-14B (synthetic)", 48, 5120, 13824, 40, 8, 128, 152064, 32768,
              1000000.0, 1e-6, qkv_bias=True),
    ArchShape("mixtral-8x7b", "llama", "Mixtral-8x7B (synthetic)", 32, 4096, 14336, 32, 8, 128, 32000, 32768,
              1000000.0, 1e-5, n_expert=8, n_expert_used=2, n_ff_exp=14336),
    ArchShape("qwen3-30b-a3b", "qwen3moe", "Qwen3-30B-A3B (synthetic)", 48, 2048, 6144, 32, 4, 128, 151936, 40960,
              1000000.0, 1e-6, n_expert=128, n_expert_used=8, n_ff_exp=768, qk_norm=True),
    ArchShape("deepseek-v3", "deepseek2", "DeepSeek-V3 (synthetic)", 61, 7168, 18432, 128, 1, 192, 129280, 163840,
              10000.0, 1e-6, n_expert=256, n_expert_used=8, n_ff_exp=2048, n_expert_shared=1, n_dense_lead=3,
              q_lora_rank=1536, kv_lora_rank=512, qk_nope=128, qk_rope=64, v_head=128,
              expert_weights_scale=2.5, expert_gating_func=2, exp_probs_bias=True),
    ArchShape("kimi-k2", "deepseek2", "Kimi-K2 (synthetic)", 61, 7168, 18432, 64, 1, 192, 163840, 131072,
              50000.0, 1e-6, n_expert=384, n_expert_used=8, n_ff_exp=2048, n_expert_shared=1, n_dense_lead=1,
              q_lora_rank=1536, kv_lora_rank=512, qk_nope=128, qk_rope=64, v_head=128,
              expert_weights_scale=2.827, expert_gating_func=2, exp_probs_bias=True),
    # The MoE families of issue 14 (config.json figures; tensors as src/models/<arch>.cpp creates them).
    ArchShape("glm-4.7-flash", "deepseek2", "GLM-4.7-Flash (synthetic)", 47, 2048, 10240, 20, 1, 256, 154880, 202752,
              1000000.0, 1e-5, n_expert=64, n_expert_used=4, n_ff_exp=1536, n_expert_shared=1, n_dense_lead=1,
              q_lora_rank=768, kv_lora_rank=512, qk_nope=192, qk_rope=64, v_head=256,
              expert_weights_scale=1.8, expert_gating_func=2, exp_probs_bias=True, row_align=256),
    ArchShape("qwen1.5-moe-a2.7b", "qwen2moe", "Qwen1.5-MoE-A2.7B (synthetic)", 24, 2048, 5632, 16, 16, 128, 151936,
              8192, 1000000.0, 1e-6, n_expert=60, n_expert_used=4, n_ff_exp=1408, n_ff_shexp=5632, qkv_bias=True,
              row_align=256),
    ArchShape("qwen3.5-35b-a3b", "qwen35moe", "Qwen3.5-35B-A3B (synthetic)", 40, 2048, 512, 16, 2, 256, 248320,
              262144, 10000000.0, 1e-6, n_expert=256, n_expert_used=8, n_ff_exp=512, n_ff_shexp=512, qk_norm=True,
              rope_dim=64, ssm_k_heads=16, ssm_v_heads=32, ssm_head=128, ssm_conv=4, full_attn_every=4,
              row_align=256, extra_kv=(("rope.dimension_sections", [11, 11, 10, 0]),)),
    ArchShape("glm-4.5-air", "glm4moe", "GLM-4.5-Air (synthetic)", 46, 4096, 10944, 96, 8, 128, 151552, 131072,
              1000000.0, 1e-5, n_expert=128, n_expert_used=8, n_ff_exp=1408, n_expert_shared=1, n_dense_lead=1,
              qkv_bias=True, rope_dim=64, expert_weights_scale=1.0, expert_gating_func=2, exp_probs_bias=True,
              row_align=256),
    # GLM-4.6 (355B-A32B): glm4moe with per-head Q/K norms (use_qk_norm), which GLM-4.5-Air's files lack.
    ArchShape("glm-4.6", "glm4moe", "GLM-4.6 (synthetic)", 92, 5120, 12288, 96, 8, 128, 151552, 202752,
              1000000.0, 1e-5, n_expert=160, n_expert_used=8, n_ff_exp=1536, n_expert_shared=1, n_dense_lead=3,
              qkv_bias=True, qk_norm=True, rope_dim=64, expert_weights_scale=2.5, expert_gating_func=2,
              exp_probs_bias=True, row_align=256),
    ArchShape("gpt-oss-20b", "gpt-oss", "gpt-oss-20b (synthetic)", 24, 2880, 2880, 64, 8, 64, 201088, 131072,
              150000.0, 1e-5, n_expert=32, n_expert_used=4, n_ff_exp=2880, qkv_bias=True, swa=128, row_align=256,
              extra_kv=(("rope.scaling.type", "yarn"), ("rope.scaling.factor", 32.0),
                        ("rope.scaling.original_context_length", 4096))),
    ArchShape("llama4-maverick", "llama4", "Llama-4-Maverick-17B-128E (synthetic)", 48, 5120, 16384, 40, 8, 128,
              202048, 1048576, 500000.0, 1e-5, n_expert=128, n_expert_used=1, n_ff_exp=8192, moe_every=2,
              row_align=256),
    ArchShape("minimax-m2", "minimax-m2", "MiniMax-M2 (synthetic)", 62, 3072, 1536, 48, 8, 128, 200064, 196608,
              5000000.0, 1e-6, n_expert=256, n_expert_used=8, n_ff_exp=1536, qk_norm=True, rope_dim=64,
              expert_gating_func=2, exp_probs_bias=True, row_align=256),
    ArchShape("ernie-4.5-21b-a3b", "ernie4_5-moe", "ERNIE-4.5-21B-A3B (synthetic)", 28, 2560, 12288, 20, 4, 128,
              103424, 131072, 500000.0, 1e-5, n_expert=64, n_expert_used=6, n_ff_exp=1536, n_ff_shexp=3072,
              n_dense_lead=1, moe_every=1, exp_probs_bias=True, tied=True, row_align=256),
    ArchShape("dots-llm1", "dots1", "dots.llm1 (synthetic)", 62, 4096, 10944, 32, 32, 128, 152064, 32768, 1000000.0,
              1e-5, n_expert=128, n_expert_used=6, n_ff_exp=1408, n_expert_shared=2, n_dense_lead=1, qk_norm=True,
              expert_weights_scale=2.5, expert_gating_func=2, exp_probs_bias=True, row_align=256),
    ArchShape("hunyuan-a13b", "hunyuan-moe", "Hunyuan-A13B (synthetic)", 32, 4096, 3072, 32, 8, 128, 128167, 32768,
              10000.0, 1e-5, n_expert=64, n_expert_used=8, n_ff_exp=3072, n_ff_shexp=3072, qk_norm=True,
              row_align=256),
    ArchShape("granite-3.1-3b-a800m", "granitemoe", "Granite-3.1-3B-A800M (synthetic)", 32, 1536, 512, 24, 8, 64,
              49155, 131072, 10000.0, 1e-6, n_expert=40, n_expert_used=8, n_ff_exp=512, tied=True, row_align=256,
              extra_kv=(("logit_scale", 6.0), ("residual_scale", 0.22), ("embedding_scale", 12.0),
                        ("attention.scale", 0.015625))),
    ArchShape("olmoe-1b-7b", "olmoe", "OLMoE-1B-7B (synthetic)", 16, 2048, 1024, 16, 16, 128, 50304, 4096, 10000.0,
              1e-5, n_expert=64, n_expert_used=8, n_ff_exp=1024, qk_norm=True, row_align=256),
)}


# Small versions of every preset (a few MB, load and generate in llama.cpp in well under a second):
# ``write_synthetic(path, name, **TINY[name])``.
TINY: dict[str, dict] = {
    "llama3-70b": dict(layers=2, scale=32, vocab=512),
    "qwen2.5-14b": dict(layers=2, scale=20, vocab=512),
    "mixtral-8x7b": dict(layers=2, scale=32, vocab=512),
    "qwen3-30b-a3b": dict(layers=2, scale=8, experts=16, vocab=512),
    "deepseek-v3": dict(layers=3, scale=16, experts=16, dense_lead=1, vocab=512),
    "kimi-k2": dict(layers=2, scale=16, experts=16, vocab=512),
    # Widths multiples of 256 (K-quants apply), 8 experts, leading dense / interleaved layers kept.
    "glm-4.7-flash": dict(layers=3, scale=8, experts=8, dense_lead=1, vocab=512),
    "qwen1.5-moe-a2.7b": dict(layers=2, scale=8, experts=8, vocab=512),
    "qwen3.5-35b-a3b": dict(layers=4, scale=8, experts=8, experts_used=2, vocab=512),
    "glm-4.5-air": dict(layers=3, scale=16, experts=8, experts_used=2, vocab=512),
    "glm-4.6": dict(layers=3, scale=16, experts=8, experts_used=2, dense_lead=1, vocab=512),
    "gpt-oss-20b": dict(layers=2, scale=16, experts=8, experts_used=2, vocab=512),
    "llama4-maverick": dict(layers=4, scale=20, experts=8, vocab=512),
    "minimax-m2": dict(layers=2, scale=12, experts=8, experts_used=2, vocab=512),
    "ernie-4.5-21b-a3b": dict(layers=3, scale=10, experts=8, experts_used=2, vocab=512),
    "dots-llm1": dict(layers=3, scale=16, experts=8, experts_used=2, vocab=512),
    "hunyuan-a13b": dict(layers=2, scale=16, experts=8, experts_used=2, vocab=512),
    "granite-3.1-3b-a800m": dict(layers=2, scale=6, experts=8, experts_used=2, vocab=512),
    "olmoe-1b-7b": dict(layers=2, scale=8, experts=8, experts_used=2, vocab=512),
}

# One tiny K-quantable model per MoE architecture of issue 14 (preset → ``write_synthetic`` arguments): the
# files of ``tools/compat_matrix.py`` and ``tests/compat``. Mixtral, Qwen3-MoE and Kimi-K2 are re-scaled with
# ``align=256`` (their TINY entries stay as they were: other tests depend on those bytes).
COMPAT: dict[str, dict] = {
    "mixtral-8x7b": dict(layers=2, scale=28, align=256, vocab=512),
    "qwen3-30b-a3b": dict(layers=2, scale=8, experts=8, align=256, vocab=512),
    "kimi-k2": dict(layers=3, scale=16, experts=8, dense_lead=1, align=256, vocab=512),
    **{k: v for k, v in TINY.items() if ARCH_SHAPES[k].row_align == 256},
}


def get_preset(name: str) -> ArchShape:
    try:
        return ARCH_SHAPES[name]
    except KeyError:
        raise LookupError(f"unknown preset {name!r}: one of {', '.join(ARCH_SHAPES)}") from None

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

    @property
    def moe(self) -> bool:
        return self.n_expert > 0

    def scaled(self, layers: int | None = None, scale: int = 1, experts: int | None = None,
               experts_used: int | None = None, vocab: int | None = None, dense_lead: int | None = None) -> ArchShape:
        """A smaller model of the same structure: ``scale`` divides widths and head counts (head sizes kept,
        widths rounded to multiples of 32 so quantized rows stay whole); ``layers``/``experts``/``vocab``
        replace counts."""
        def w(x: int) -> int:
            return x if scale == 1 or x == 0 else max(32, int(round(x / scale / 32)) * 32)

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
}


def get_preset(name: str) -> ArchShape:
    try:
        return ARCH_SHAPES[name]
    except KeyError:
        raise LookupError(f"unknown preset {name!r}: one of {', '.join(ARCH_SHAPES)}") from None

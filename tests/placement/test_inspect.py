"""Inspection: roles on the real Gemma 3 270M and on synthetic models of each family; MoE figures."""
from __future__ import annotations

import dataclasses
import logging

from hypura_placement import inspect_model, tensor_role
from hypura_synthetic import get_preset, write_synthetic


def test_gemma_roles(default_model):
    m = inspect_model(default_model)
    assert (m.architecture, m.n_layer, m.n_embd, m.n_vocab) == ("gemma3", 18, 640, 262144)
    assert m.file_type == "MOSTLY_Q4_K_M" and not m.header_only and not m.is_moe
    roles = {t.name: t.role for t in m.tensors}
    assert roles["token_embd.weight"] == "embedding"
    assert roles["output_norm.weight"] == "norm"
    assert roles["blk.3.attn_q.weight"] == "attention" and roles["blk.3.attn_output.weight"] == "attention"
    assert roles["blk.3.attn_k_norm.weight"] == "norm" and roles["blk.3.post_ffw_norm.weight"] == "norm"
    assert {roles[f"blk.17.ffn_{p}.weight"] for p in ("gate", "up", "down")} == {"dense_ffn"}
    assert "other" not in roles.values()
    by_role = m.bytes_by_role()
    assert sum(by_role.values()) == sum(t.nbytes for t in m.tensors) == m.file_size - m.tensors[0].offset
    assert by_role["dense_ffn"] == sum(m.layer_bytes("dense_ffn").values()) and len(m.layer_bytes("dense_ffn")) == 18
    assert m.tied_embeddings                      # Gemma's output is its embedding: touched whole per token
    assert m.bytes_per_token() == sum(t.nbytes for t in m.tensors)
    assert 2.6e8 < m.n_params < 2.7e8


def test_moe_figures(synthetic):
    m = inspect_model(synthetic("mixtral-8x7b", layers=3, scale=32, vocab=512))
    assert m.is_moe and (m.n_expert, m.n_expert_used) == (8, 2)
    exps = [t for t in m.tensors if t.layer == 1 and t.role == "routed_expert"]
    assert sorted(t.name for t in exps) == [f"blk.1.ffn_{p}_exps.weight" for p in ("down", "gate", "up")]
    assert all(t.shape[2] == 8 for t in exps)
    assert m.expert_bytes() == sum(t.nbytes // 8 for t in exps)      # nb[2] of each fused tensor
    assert tensor_role("blk.1.ffn_gate_inp.weight", "llama") == "router"
    routed = m.bytes_by_role()["routed_expert"]
    assert m.bytes_per_token() == int(sum(t.nbytes for t in m.tensors) - routed * 6 / 8
                                      - next(t.nbytes for t in m.tensors if t.name == "token_embd.weight") * 511 / 512)


def test_deepseek_roles(synthetic):
    m = inspect_model(synthetic("deepseek-v3"))
    roles = {t.name: t.role for t in m.tensors}
    assert m.n_layer_dense_lead == 1 and m.n_expert_shared == 1 and m.kv_lora_rank > 0 and m.rope_dim == 64
    assert roles["blk.0.ffn_up.weight"] == "dense_ffn" and "blk.0.ffn_up_exps.weight" not in roles
    assert roles["blk.1.ffn_up_shexp.weight"] == "shared_expert"
    assert roles["blk.1.ffn_up_exps.weight"] == "routed_expert"
    assert roles["blk.1.exp_probs_b.bias"] == "router" and roles["blk.1.ffn_gate_inp.weight"] == "router"
    assert roles["blk.2.attn_k_b.weight"] == roles["blk.2.attn_kv_a_mqa.weight"] == "attention"
    assert roles["blk.2.attn_kv_a_norm.weight"] == "norm"
    assert "other" not in roles.values()


def test_unknown_architecture_uses_names_with_warning(tmp_path, caplog):
    shape = dataclasses.replace(get_preset("qwen3-30b-a3b"), arch="mystery-moe", preset="mystery")
    p = write_synthetic(tmp_path / "mystery.gguf", shape, layers=2, scale=8, experts=8, vocab=512)
    with caplog.at_level(logging.WARNING):
        m = inspect_model(p)
    assert "'mystery-moe' is not in the role table" in caplog.text
    assert m.architecture == "mystery-moe" and m.n_expert == 8 and m.is_moe
    roles = {t.name: t.role for t in m.tensors}
    assert roles["blk.1.ffn_down_exps.weight"] == "routed_expert" and roles["blk.1.attn_q_norm.weight"] == "norm"
    assert roles["blk.0.attn_v.weight"] == "attention" and roles["output.weight"] == "output"


def test_full_size_header_only_models(header_only_models):
    sizes = {p: inspect_model(f) for p, f in header_only_models.items()}
    data = {p: sum(t.nbytes for t in m.tensors) for p, m in sizes.items()}
    assert all(m.header_only for m in sizes.values())
    assert 8.0e9 < data["qwen2.5-14b"] < 8.8e9
    assert 26e9 < data["mixtral-8x7b"] < 31e9
    assert 38e9 < data["llama3-70b"] < 42e9
    kimi = sizes["kimi-k2"]
    assert 1.02e12 < kimi.n_params < 1.04e12 and kimi.n_expert == 384 and kimi.n_expert_used == 8
    assert kimi.file_size < 16 << 20

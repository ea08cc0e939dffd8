"""Files made by llama.cpp's own tools from the synthetic F16 models load and generate in the real llama.cpp build."""
from __future__ import annotations

import json

import pytest
from helpers import run_hypura

from hypura_placement import inspect_model
from hypura_synthetic import ARCH_SHAPES, COMPAT, tensor_specs
from hypura_synthetic.compat import PROMPT
from hypura_synthetic.realfiles import ToolError, quantize, split


def _resident(path, n: int = 8) -> dict:
    r = run_hypura("run", str(path), "--mode", "resident", "--raw", "--temp", "0", "-n", str(n), "-p", PROMPT,
                   "--json", "--ctx", "256", "--threads", "1", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", list(COMPAT))
def test_f16_preset_loads_and_generates(compat_file, preset):
    path = compat_file(preset, "F16")
    m = inspect_model(path)
    shape = ARCH_SHAPES[preset].scaled(**COMPAT[preset])
    assert m.architecture == shape.arch
    assert [t.name for t in m.tensors] == [s.name for s in tensor_specs(shape)]
    assert m.n_expert == 8 and m.n_layer >= 2
    out = _resident(path)
    assert out["mode"] == "resident" and out["prompt_tokens"] > 1
    assert out["done_reason"] in ("length", "stop") and all(0 <= t < 512 for t in out["tokens"])


def test_quantize_gives_per_layer_k_quant_mix(compat_file):
    """llama-quantize's Q4_K_M recipe: some layers' ffn_down_exps Q6_K, others Q4_K — the mix users download."""
    path = compat_file("qwen3-30b-a3b", "Q4_K_M")
    types = {t.name: t.ggml_type for t in inspect_model(path).tensors}
    downs = {types[f"blk.{i}.ffn_down_exps.weight"] for i in range(2)}
    assert {"Q4_K", "Q6_K"} <= set(types.values()) and len(downs) == 2, downs
    assert _resident(path)["tokens"]


def test_mxfp4_moe_for_gpt_oss(compat_file):
    path = compat_file("gpt-oss-20b", "MXFP4_MOE")
    types = {t.name: t.ggml_type for t in inspect_model(path).tensors}
    assert types["blk.0.ffn_up_exps.weight"] == "MXFP4" and types["blk.0.ffn_up_exps.bias"] == "F32"
    assert _resident(path)["tokens"]


def test_split_loads_from_first_shard(compat_file, tmp_path):
    src = compat_file("olmoe-1b-7b", "Q4_K_M")
    shards = split(src, tmp_path / "olmoe", max_tensors=8)
    assert len(shards) >= 3 and shards[0].name == f"olmoe-00001-of-{len(shards):05d}.gguf"
    m = inspect_model(shards[0])
    assert len(m.tensors) == len(inspect_model(src).tensors)
    assert _resident(shards[0])["tokens"] == _resident(src)["tokens"]


def test_missing_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPURA_LLAMA_BIN", str(tmp_path))
    with pytest.raises(ToolError, match="llama-quantize not found at .*make build"):
        quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q4_K_M")


def test_tool_failure_names_the_tool(compat_file, tmp_path):
    with pytest.raises(ToolError, match="llama-quantize exited"):
        quantize(compat_file("olmoe-1b-7b", "F16"), tmp_path / "x.gguf", "NOT_A_TYPE")

"""`hypura inspect` and `hypura plan` end to end, and tools/make_synthetic.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path
import subprocess

from helpers import run_hypura

from hypura_placement import inspect_model, validate_gguf

ROOT = Path(__file__).resolve().parents[2]


def test_inspect_gemma(default_model):
    r = run_hypura("inspect", str(default_model), "--json", "--tensors")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["architecture"] == "gemma3" and out["bytes_by_role"]["dense_ffn"] > 0
    assert len(out["tensors"]) == 236 and {t["role"] for t in out["tensors"]} >= {"embedding", "attention", "norm"}
    r = run_hypura("inspect", str(default_model))
    assert r.returncode == 0 and "dense_ffn" in r.stdout and "gemma3" in r.stdout


def test_plan_table_and_json(header_only_models):
    r = run_hypura("plan", str(header_only_models["llama3-70b"]), "--hardware", "mac-m1max-32g")
    assert r.returncode == 0, r.stderr
    assert "mode        dense-ffn-streaming" in r.stdout and "bottleneck: disk" in r.stdout
    assert "dense FFN on nvme" in r.stdout and "dense FFN on gpu" in r.stdout
    r = run_hypura("plan", str(header_only_models["kimi-k2"]), "--hardware", "mac-m1max-32g", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "expert-streaming" and out["predicted_tps"] > 0 and out["nvme_bytes_per_token"] > 0
    assert set(out["tiers"]) == {"gpu", "ram", "nvme"}
    assert len(out["tensors"]) == len(inspect_model(header_only_models["kimi-k2"]).tensors)


def test_plan_budgets_and_errors(synthetic, tmp_path):
    p = synthetic("mixtral-8x7b", layers=4, scale=32, vocab=512)
    r = run_hypura("plan", str(p), "--hardware", "cpu-2c-24g", "--ram-budget", "64M", "--ctx", "256", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ram_budget"] == 64 << 20 and out["ctx"] == 256 and out["compute_tier"] == "ram"
    r = run_hypura("plan", str(p), "--hardware", "cpu-2c-24g", "--ram-budget", "1M")
    assert r.returncode == 2 and "too small" in r.stderr and "at least" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_hypura("plan", str(p), "--ram-budget", "lots", "--hardware", "cpu-2c-24g")
    assert r.returncode == 2 and "not a size" in r.stderr
    r = run_hypura("plan", str(p), "--hardware", "no-such-machine")
    assert r.returncode == 2 and "unknown hardware" in r.stderr
    r = run_hypura("inspect", str(tmp_path / "missing.gguf"))
    assert r.returncode == 2 and "no such model file" in r.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    r = run_hypura("plan", str(bad), "--hardware", "cpu-2c-24g")
    assert r.returncode == 2 and "not a GGUF file" in r.stderr


def test_plan_hardware_file(synthetic, tmp_path):
    from hypura_placement import PRESETS

    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps({**PRESETS["rtx4090-64g"], "name": "my-box"}))
    r = run_hypura("plan", str(synthetic("llama3-70b")), "--hardware", str(hw), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["hardware"] == "my-box" and out["mode"] == "full-resident"


def test_make_synthetic_tool(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "make_synthetic.py")]
    r = subprocess.run([*tool, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--header-only" in r.stdout and "--skew" in r.stdout
    out = tmp_path / "q.gguf"
    r = subprocess.run([*tool, "qwen3-30b-a3b", str(out), "--layers", "2", "--scale", "8", "--experts", "16",
                        "--vocab", "512", "--type", "Q8_0", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    h = validate_gguf(out)
    assert h.kv["general.architecture"] == "qwen3moe" and h.kv["qwen3moe.expert_count"] == 16
    r = subprocess.run([*tool, "nope", str(out)], capture_output=True, text=True)
    assert r.returncode == 2

"""`hypura plan URL` / `hypura inspect URL`: the header only, by Range requests from a real loopback host; the
bytes fetched are reported, counted by the host too, and bounded by max(first request, 2 x the header)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from helpers import run_hypura

from hypura_hub import read_remote_header
from hypura_hub.remote_header import FIRST
from hypura_placement import read_header
from hypura_placement.gguf_file import read_file_header

REPO = "owner/Tiny-GGUF"


def hypura(host, tmp_path, *args):
    return run_hypura(*args, env={"HF_ENDPOINT": host.url, "HYPURA_MODELS": str(tmp_path / "models")}, timeout=120)


def bound(path) -> int:
    """What the reader may fetch of a file: its first request, or twice its header."""
    return max(FIRST, 2 * read_file_header(path).data_offset)


def test_plan_url_of_the_real_model_reads_only_its_header(host, default_model, tmp_path):
    url = host.add_plain_file("gemma-3-270m-Q4_K_M.gguf", default_model)
    size = default_model.stat().st_size
    r = hypura(host, tmp_path, "plan", url, "--hardware", "cpu-2c-24g", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    key = "gemma-3-270m-Q4_K_M.gguf"
    assert out["fetched_bytes"] == host.sent[key]              # what we report is what the host sent
    assert out["fetched_bytes"] <= bound(default_model)        # bounded by the header, not the weights
    assert out["fetched_bytes"] < size / 20
    assert out["remote_size"] == size
    assert all(e["range"] for e in host.requests_for(key))     # never a whole-file GET
    local = json.loads(hypura(host, tmp_path, "plan", str(default_model), "--hardware", "cpu-2c-24g", "--json").stdout)
    assert out["tiers"] == local["tiers"] and out["layers"] == local["layers"] and out["mode"] == local["mode"]
    text = hypura(host, tmp_path, "plan", url, "--hardware", "h100-80g")
    assert text.returncode == 0, text.stderr
    assert "fetched " in text.stdout and "header only" in text.stdout and "predicted" in text.stdout


def test_plan_of_a_split_set_reads_every_shard_header(host, tiny_files, tmp_path):
    for i in (1, 2, 3):
        host.add_repo_file(REPO, f"Q8_0/{tiny_files[f'shard{i}'].name}", tiny_files[f"shard{i}"])
    r = hypura(host, tmp_path, "plan", "hf.co/owner/Tiny-GGUF:Q8_0", "--hardware", "mac-m1max-32g", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    shas = [host.sha[tiny_files[f"shard{i}"]] for i in (1, 2, 3)]
    assert all(host.requests_for(s) for s in shas)             # each shard's header was read
    assert out["fetched_bytes"] == sum(host.sent[s] for s in shas)
    assert out["fetched_bytes"] <= sum(bound(tiny_files[f"shard{i}"]) for i in (1, 2, 3))
    assert out["remote_size"] == sum(tiny_files[f"shard{i}"].stat().st_size for i in (1, 2, 3))
    assert set(out["tensors"]) == {t.name for t in read_header(tiny_files["b"]).tensors}


def test_inspect_a_hugging_face_name(host, tiny_files, tmp_path):
    host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    r = hypura(host, tmp_path, "inspect", "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert "architecture  llama" in r.stdout and "fetched " in r.stdout
    assert f"({tiny_files['a'].stat().st_size} bytes)" in r.stdout  # the remote size, not the prefix's


def test_a_host_that_ignores_range_still_costs_only_the_header(host, default_model):
    """A 200 to a Range request: the reader takes what it asked for and hangs up."""
    url = host.add_plain_file("g.gguf", default_model)
    host.ranges_ignored = True
    remote = read_remote_header([url])
    assert remote.fetched <= bound(default_model)
    assert len(remote.header.tensors) == len(read_header(default_model).tensors)
    assert host.sent["g.gguf"] < default_model.stat().st_size / 4   # the host stopped early too


def test_plan_svg_is_the_tier_picture(tiny_files, tmp_path):
    svg = tmp_path / "tiers.svg"
    r = run_hypura("plan", str(tiny_files["a"]), "--hardware", "cpu-2c-24g", "--svg", str(svg))
    assert r.returncode == 0, r.stderr
    assert f"tier picture: {svg}" in r.stdout
    root = ET.parse(svg).getroot()
    cells = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if "cell" in e.get("class", "")]
    n_layer = read_header(tiny_files["a"]).kv["llama.block_count"]
    assert len(cells) == 2 * n_layer + 2                        # attention + FFN per layer, embedding, output
    assert {c.get("class") for c in cells} == {"cell tier-ram"}  # a CPU machine: all resident in RAM


def test_a_url_that_is_not_a_gguf_is_one_line(host, tmp_path):
    page = tmp_path / "page.gguf"
    page.write_bytes(b"<!doctype html><title>Sign in</title>" * 100)
    r = hypura(host, tmp_path, "plan", host.add_plain_file("page.gguf", page))
    assert r.returncode == 2 and "not a GGUF file" in r.stderr and "Traceback" not in r.stderr
    r = hypura(host, tmp_path, "inspect", host.url + "/files/missing.gguf")
    assert r.returncode == 2 and "HTTP 404" in r.stderr


def test_a_578_gb_model_is_planned_for_a_32_gb_mac_from_8_mib(host, tmp_path):
    """The issue's question: will Kimi-K2 (578 GB) run on a 32 GB Mac? A synthetic file with Kimi-K2's tensor table,
    as long as its tensors say (sparse: no disk used), served by URL: planned without its weights."""
    import os

    from hypura_synthetic import write_synthetic

    path = write_synthetic(tmp_path / "Kimi-K2-Q4_0.gguf", "kimi-k2", header_only=True)
    os.truncate(path, read_file_header(path).data_end)
    host.sha[path] = "0" * 64                       # (the host would hash 578 GB of zeros otherwise)
    r = hypura(host, tmp_path, "plan", host.add_plain_file("Kimi-K2-Q4_0.gguf", path), "--hardware", "mac-m1max-32g",
               "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["remote_size"] == path.stat().st_size > 500e9
    assert out["mode"] == "expert-streaming" and 0 < out["predicted_tps"] < 10
    assert out["fetched_bytes"] <= bound(path) and out["fetched_bytes"] == host.sent["Kimi-K2-Q4_0.gguf"]

"""Ollama's model commands (list, show, cp, rm, create, ps, stop) through the real `hypura` CLI: without a
server (the same API served in the command's own process over the local registry) and against a real
server on loopback found through HYPURA_HOST/OLLAMA_HOST, parsed as ollama parses OLLAMA_HOST."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import free_port, isolated_env, run_cli, running_server

from hypura.client import server_url


@pytest.mark.parametrize("env, url", [
    ({}, "http://127.0.0.1:11434"),
    ({"OLLAMA_HOST": "0.0.0.0"}, "http://127.0.0.1:11434"),
    ({"OLLAMA_HOST": "example.com:8080"}, "http://example.com:8080"),
    ({"OLLAMA_HOST": "http://example.com"}, "http://example.com:80"),
    ({"OLLAMA_HOST": "https://example.com/ollama/"}, "https://example.com:443/ollama"),
    ({"OLLAMA_HOST": "[::1]:9"}, "http://[::1]:9"),
    ({"OLLAMA_HOST": ":7000"}, "http://127.0.0.1:7000"),
    ({"OLLAMA_HOST": "a:1", "HYPURA_HOST": "b:2"}, "http://b:2"),
    ({"OLLAMA_HOST": "a:1", "HYPURA_PORT": "3"}, "http://a:3"),
])
def test_server_address_is_read_as_ollama_reads_it(tmp_path, env, url):
    assert server_url({"HYPURA_CONFIG": str(tmp_path / "none.toml"), **env}) == url


def _ok(res):
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return res.stdout


def _error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _rows(text: str) -> dict[str, list[str]]:
    """A table as printed (columns 4+ spaces apart) → {first cell: cells}; checks the header's shape."""
    lines = text.rstrip("\n").split("\n")
    return {cells[0]: cells for cells in (re.split(r" {4,}", ln.strip()) for ln in lines)}


def _modelfile(tmp_path: Path, default_model: Path) -> Path:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "tiny.gguf").symlink_to(default_model)
    mf = tmp_path / "Modelfile"
    mf.write_text('# a comment\nFROM ./weights/tiny.gguf\nPARAMETER temperature 0.3\nPARAMETER stop "<eot>"\n'
                  'SYSTEM """You are terse.\nVery terse."""\n')
    return mf


def test_model_commands_without_a_server(tmp_path, default_model):
    env = isolated_env(tmp_path, f"127.0.0.1:{free_port()}")   # nothing answers there
    rows = _rows(_ok(run_cli("list", env=env)))
    assert rows["NAME"] == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert rows["gemma3:270m"][2] == "253 MB" and rows["gemma3:270m"][3].endswith("ago")

    info = _ok(run_cli("show", "gemma3:270m", env=env))
    assert re.search(r"^  Model\n    architecture {8}gemma3\n    parameters {10}268\.10M\n", info, re.M), info
    assert "    quantization        Q4_K_M" in info and "  Capabilities\n    completion" in info
    assert "{{ bos_token }}" in _ok(run_cli("show", "gemma3:270m", "--template", env=env))
    _error(run_cli("show", "gemma3:270m", "--template", "--system", env=env), "only one of")

    mf = _modelfile(tmp_path, default_model)
    res = run_cli("create", "terse", "-f", str(mf), env=env, cwd=tmp_path / "weights")
    assert _ok(res) == "" and res.stderr.strip().splitlines()[-1] == "success", res.stderr
    assert _ok(run_cli("show", "terse", "--system", env=env)) == "You are terse.\nVery terse."
    params = _ok(run_cli("show", "terse", "--parameters", env=env))
    assert re.search(r"^temperature {20}0\.3$", params, re.M) and re.search(r'^stop {27}"<eot>"$', params, re.M), params
    modelfile = _ok(run_cli("show", "terse", "--modelfile", env=env))
    assert f"FROM {(tmp_path / 'weights' / 'tiny.gguf').resolve()}" in modelfile
    info = _ok(run_cli("show", "terse", env=env))
    assert re.search(r'^  Parameters\n    stop {11}"<eot>"\n    temperature {4}0\.3\n\n  System\n    You are terse\.\n'
                     r"    Very terse\.\n", info, re.M), info

    (tmp_path / "ByName").write_text("FROM gemma3:270m\nSYSTEM Be brief.\n")   # FROM a model's name
    _ok(run_cli("create", "brief", "-f", str(tmp_path / "ByName"), env=env))
    assert _ok(run_cli("show", "brief", "--system", env=env)) == "Be brief."
    assert _ok(run_cli("rm", "brief", env=env)) == "deleted 'brief'\n"

    assert _ok(run_cli("cp", "terse", "terse2", env=env)) == "copied 'terse' to 'terse2'\n"
    assert set(_rows(_ok(run_cli("ls", "ters", env=env)))) == {"NAME", "terse:latest", "terse2:latest"}
    assert _ok(run_cli("rm", "terse", "terse2", env=env)) == "deleted 'terse'\ndeleted 'terse2'\n"
    assert set(_rows(_ok(run_cli("list", env=env)))) == {"NAME", "gemma3:270m"}
    assert default_model.is_file()   # rm removes the name, never the file it pointed to

    _error(run_cli("rm", "gemma3:270m", env=env), "built in")
    _error(run_cli("show", "no-such:1b", env=env), "no-such:1b", "not found")
    _error(run_cli("create", "x", "-f", str(tmp_path / "absent"), env=env), "Modelfile wasn't found")
    (tmp_path / "Adapter").write_text("FROM gemma3:270m\nADAPTER ./lora.gguf\n")
    _error(run_cli("create", "x", "-f", str(tmp_path / "Adapter"), env=env), "ADAPTER")
    for cmd in (["ps"], ["stop", "gemma3:270m"]):   # nothing is loaded without a server: they say so
        _error(run_cli(*cmd, env=env), "no server answers at http://127.0.0.1:", "hypura serve")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("srv")
    with running_server(root, keep_alive=300.0) as hostport:
        yield hostport, root


def test_model_commands_against_a_server(tmp_path, served):
    server, server_dir = served
    env = isolated_env(tmp_path, "", OLLAMA_HOST=f"http://{server}")   # OLLAMA_HOST, with a scheme
    del env["HYPURA_HOST"]
    assert set(_rows(_ok(run_cli("list", env=env)))) == {"NAME", "gemma3:270m"}

    # the server may not read the Modelfile's FROM where it lies: the CLI uploads it as a blob, as ollama does
    from hypura_synthetic import write_synthetic

    weights = write_synthetic(tmp_path / "w.gguf", "llama3-70b", layers=2, header_only=True)   # a header only
    (tmp_path / "Modelfile").write_text("FROM ./w.gguf\nPARAMETER temperature 0.25\n")
    res = run_cli("create", "uploaded", env=env, cwd=tmp_path)   # -f defaults to ./Modelfile
    assert res.returncode == 0 and res.stderr.strip().splitlines()[-1] == "success", res.stderr
    import hashlib

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (server_dir / "srv-models" / "blobs" / f"sha256-{digest}").read_bytes() == weights.read_bytes()
    assert re.search(r"^temperature +0\.25$", _ok(run_cli("show", "uploaded", "--parameters", env=env)), re.M)
    assert "uploaded:latest" in _rows(_ok(run_cli("list", env=env)))
    from hypura.client import Client

    shown = Client(f"http://{server}").request("POST", "/api/show", {"model": "uploaded"})
    assert shown["parameters"] == f"{'temperature':<30} 0.25"   # Ollama's field: no PARAMETER keyword
    res = run_cli("create", "again", env=env, cwd=tmp_path)   # the same file: the blob is there already
    assert res.returncode == 0 and f"using existing layer sha256:{digest}" in res.stderr, res.stderr

    # a model the server has loaded: ps shows Ollama's columns and Hypura's
    client = Client(f"http://{server}")
    out = client.request("POST", "/api/generate", {"model": "gemma3:270m", "prompt": "Hello", "stream": False,
                                                   "options": {"temperature": 0, "num_predict": 4}})
    assert out["done"]
    rows = _rows(_ok(run_cli("ps", env=env)))
    assert rows["NAME"] == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "MODE", "GPU", "RAM", "NVME", "HIT RATE",
                            "TOK/S", "UNTIL"]
    row = rows["gemma3:270m"]
    assert row[1:5] == [row[1], "253 MB", "100% CPU", "1024"] and len(row[1]) == 12
    assert row[5] == "resident" and row[7] == "253 MB" and row[8] == "0 B" and row[9] == "-"
    assert re.fullmatch(r"\d+\.\d( \(plan \d+\.\d\))?", row[10]) and float(row[10].split()[0]) > 0, row
    assert row[11].endswith("from now")

    assert _ok(run_cli("stop", "gemma3:270m", env=env)) == ""
    assert set(_rows(_ok(run_cli("ps", env=env)))) == {"NAME"}
    _error(run_cli("stop", "no-such:1b", env=env), "couldn't find model \"no-such:1b\" to stop")
    assert _ok(run_cli("rm", "uploaded", "again", env=env)) == "deleted 'uploaded'\ndeleted 'again'\n"

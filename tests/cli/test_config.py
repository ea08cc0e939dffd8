"""Configuration layering (default < file < env < flag), sources, parsing, and `hypura config` end to end."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hypura.config import KEYS, config_path, load_config, parse_host_port, parse_size

GiB = 1 << 30


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for var in ("HYPURA_CONFIG", "HYPURA_GPU_BUDGET", "HYPURA_RAM_BUDGET", "HYPURA_MODELS", "HYPURA_HOST",
                "OLLAMA_HOST", "HYPURA_PORT", "HYPURA_CTX"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("8G", 8 * GiB), ("512M", 512 << 20), ("16GiB", 16 * GiB), ("1.5g", 3 * GiB // 2), ("4096", 4096),
    ("64k", 64 << 10), ("2T", 2 << 40), ("8GB", 8 * 10**9), ("500MB", 500 * 10**6), (" 8 G ", 8 * GiB), (1024, 1024),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "8X", "-1G", "8 GiBs", "iB", "1e9", "eight"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0", ("0.0.0.0", None)), ("0.0.0.0:8080", ("0.0.0.0", 8080)), ("example.org:1", ("example.org", 1)),
    ("http://example.org:9000", ("example.org", 9000)), ("http://example.org", ("example.org", 80)),
    ("https://h/path", ("h", 443)), ("[::1]:5000", ("::1", 5000)), ("::1", ("::1", None)), (":7000", ("127.0.0.1", 7000)),
])
def test_ollama_host_format(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host:99999", "host:http", "[::1:80"])
def test_bad_host_port(text):
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_defaults(user_dirs):
    cfg = load_config({}, env={})
    assert (cfg.gpu_budget, cfg.ram_budget, cfg.host, cfg.port) == (None, None, "127.0.0.1", 11434)
    assert cfg.models_dir == user_dirs / "data/hypura/models"
    assert cfg.path == user_dirs / "config/hypura/config.toml"
    assert set(cfg.sources.values()) == {"default"} and set(cfg.sources) == set(KEYS)


def test_file_env_flag_precedence(user_dirs):
    path = write_toml(user_dirs / "config/hypura/config.toml",
                      'gpu_budget = "8G"\nram_budget = "16GiB"\nmodels_dir = "~/m"\nhost = "0.0.0.0"\nport = 9000\nctx = 8192\n')
    env = {"HYPURA_RAM_BUDGET": "12G", "HYPURA_PORT": "9100", "HYPURA_CTX": "2048"}
    cfg = load_config({"ctx": "1024", "host": None, "unrelated": 1}, env=env)
    assert cfg.gpu_budget == 8 * GiB and cfg.sources["gpu_budget"] == f"file {path}"
    assert cfg.ram_budget == 12 * GiB and cfg.sources["ram_budget"] == "env HYPURA_RAM_BUDGET"
    assert cfg.models_dir == Path.home() / "m" and cfg.sources["models_dir"] == f"file {path}"
    assert cfg.host == "0.0.0.0" and cfg.sources["host"] == f"file {path}"
    assert cfg.port == 9100 and cfg.sources["port"] == "env HYPURA_PORT"
    assert cfg.ctx == 1024 and cfg.sources["ctx"] == "flag --ctx"
    assert load_config({"gpu_budget": "auto"}, env=env).gpu_budget is None


def test_host_variables(user_dirs):
    cfg = load_config({}, env={"OLLAMA_HOST": "http://0.0.0.0:8000"})
    assert (cfg.host, cfg.port) == ("0.0.0.0", 8000) and cfg.sources["port"] == "env OLLAMA_HOST"
    cfg = load_config({}, env={"OLLAMA_HOST": "0.0.0.0:8000", "HYPURA_HOST": "10.0.0.1", "HYPURA_PORT": "7"})
    assert (cfg.host, cfg.port) == ("10.0.0.1", 7)
    assert cfg.sources["host"] == "env HYPURA_HOST" and cfg.sources["port"] == "env HYPURA_PORT"
    cfg = load_config({"port": 5}, env={"HYPURA_HOST": "h:6"})
    assert (cfg.host, cfg.port, cfg.sources["port"]) == ("h", 5, "flag --port")


def test_hypura_config_env_moves_the_file(user_dirs):
    path = write_toml(user_dirs / "elsewhere.toml", "port = 1234\n")
    assert config_path({"HYPURA_CONFIG": str(path)}) == path
    cfg = load_config({}, env={"HYPURA_CONFIG": str(path), "HYPURA_MODELS": str(user_dirs / "mm")})
    assert cfg.port == 1234 and cfg.sources["port"] == f"file {path}"
    assert cfg.models_dir == user_dirs / "mm" and cfg.sources["models_dir"] == "env HYPURA_MODELS"


@pytest.mark.parametrize("text, message", [
    ("gpu_budget = \"8X\"\n", "not a size"), ("prot = 1\n", "unknown key"), ("port = [\n", "config.toml"),
    ("port = 70000\n", "port must be"), ("ctx = 0\n", "ctx must be"), ("port = true\n", "port must be"),
])
def test_bad_file_names_the_file(user_dirs, text, message):
    path = write_toml(user_dirs / "config/hypura/config.toml", text)
    with pytest.raises(ValueError, match=message) as info:
        load_config({}, env={})
    assert str(path) in str(info.value)


def test_bad_env_and_flag_name_their_source(user_dirs):
    with pytest.raises(ValueError, match="env HYPURA_CTX"):
        load_config({}, env={"HYPURA_CTX": "lots"})
    with pytest.raises(ValueError, match="flag --gpu-budget"):
        load_config({"gpu_budget": "big"}, env={})


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_config_command_json_end_to_end(user_dirs):
    path = write_toml(user_dirs / "c.toml", 'gpu_budget = "6G"\nport = 8000\n')
    env = {"HYPURA_CONFIG": str(path), "OLLAMA_HOST": "0.0.0.0"}
    out = _run([sys.executable, "-m", "hypura.commands.config", "--json", "--ctx", "512"], env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["path"] == str(path)
    s = shown["settings"]
    assert s["gpu_budget"] == {"value": 6 * GiB, "source": f"file {path}"}
    assert s["port"] == {"value": 8000, "source": f"file {path}"}
    assert s["host"] == {"value": "0.0.0.0", "source": "env OLLAMA_HOST"}
    assert s["ctx"] == {"value": 512, "source": "flag --ctx"}
    assert s["ram_budget"] == {"value": None, "source": "default"}
    table = _run([sys.executable, "-m", "hypura.commands.config"], env)
    assert table.returncode == 0 and "env OLLAMA_HOST" in table.stdout and "6.00 GiB" in table.stdout


def test_config_command_bad_value_is_one_line_exit_2(user_dirs):
    out = _run([sys.executable, "-m", "hypura.commands.config"], {"HYPURA_PORT": "port"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["hypura config: env HYPURA_PORT: port must be an integer in [0, 65535], not 'port'"]


def test_hypura_entry_point(user_dirs):
    """`hypura config --json` through the installed dispatcher (every command module must load)."""
    from hypura.main import _MODULES, COMMANDS   # a module may register several commands (models: list, show ...)
    missing = [c for c in COMMANDS if c not in _MODULES or importlib.util.find_spec(_MODULES[c].__name__) is None]
    assert not missing, f"the dispatcher cannot load the module of: {', '.join(missing)}"
    exe = shutil.which("hypura", path=str(Path(sys.executable).parent)) or shutil.which("hypura")
    assert exe is not None, "the hypura script is not installed (make build)"
    out = _run([exe, "config", "--json", "--port", "4321"], {"HYPURA_CONFIG": str(user_dirs / "none.toml")})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["settings"]["port"] == {"value": 4321, "source": "flag --port"}
    bad = _run([exe, "config", "--port", "x"], {"HYPURA_CONFIG": str(user_dirs / "none.toml")})
    assert bad.returncode == 2 and bad.stderr.startswith("hypura config: flag --port")

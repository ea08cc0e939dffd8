"""`hypura pull` against a real HTTP host on loopback that answers as Hugging Face and its CDN do
(`model_host.ModelHost`): the file Ollama would pick, split sets, redirects, Range resume, sha256 checks, and the
store never holding a partial or unverified file under the final name."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import run_hypura

from hypura_hub import HubError, choose, quant_of

REPO = "owner/Tiny-GGUF"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pull(host, tmp_path: Path, *args: str):
    return run_hypura("pull", "-q", *args, env={"HF_ENDPOINT": host.url, "HYPURA_MODELS": str(tmp_path / "models")},
                      timeout=120)


def store(tmp_path: Path) -> Path:
    return tmp_path / "models" / "hub" / "hf.co" / "owner" / "Tiny-GGUF"


def registered(tmp_path: Path, name: str) -> Path:
    from hypura_engine import Registry

    return Registry(tmp_path / "models", tmp_path / "no-ollama").resolve(name).path


def test_choose_picks_the_file_ollama_would():
    files = ["README.md", "Model-Q4_K_M.gguf", "Model-Q4_K_S.gguf", "Model-Q8_0.gguf", "mmproj-Model-f16.gguf",
             "Model-IQ4_XS.gguf", "BF16/Model-BF16-00002-of-00002.gguf", "BF16/Model-BF16-00001-of-00002.gguf"]
    assert choose(files, None) == ("Q4_K_M", ["Model-Q4_K_M.gguf"])            # no tag: Q4_K_M
    assert choose(files, "q8_0") == ("Q8_0", ["Model-Q8_0.gguf"])              # the tag, any case
    assert choose(files, "iq4_xs") == ("IQ4_XS", ["Model-IQ4_XS.gguf"])
    assert choose(files, "bf16") == ("BF16", ["BF16/Model-BF16-00001-of-00002.gguf",
                                              "BF16/Model-BF16-00002-of-00002.gguf"])   # every shard, in order
    with pytest.raises(HubError, match="no F16 file.*BF16, IQ4_XS, Q4_K_M, Q4_K_S, Q8_0"):   # mmproj-*-f16 is no model
        choose(files, "F16")
    with pytest.raises(HubError, match="no Q4_K file"):                        # Q4_K is not Q4_K_M
        choose(files, "Q4_K")
    assert choose(["x-Q8_0.gguf", "x-Q4_0.gguf"], None) == ("Q4_0", ["x-Q4_0.gguf"])   # no Q4_K_M: the fallback order
    unsloth = ["M-UD-Q4_K_XL.gguf", "M-Q4_K_M.gguf", "M-UD-Q4_K_M.gguf"]
    assert choose(unsloth, "ud-q4_k_xl") == ("UD-Q4_K_XL", ["M-UD-Q4_K_XL.gguf"])
    assert choose(unsloth, "Q4_K_XL") == ("Q4_K_XL", ["M-UD-Q4_K_XL.gguf"])
    assert choose(unsloth, None) == ("Q4_K_M", ["M-Q4_K_M.gguf"])                # the shorter of two matches
    assert quant_of("a.b/Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("m.q5_k_m-00001-of-00003.gguf") == "Q5_K_M"


def test_pull_by_hugging_face_name_default_quant(host, tiny_files, tmp_path):
    """No tag picks Q4_K_M; the resolve URL redirects to the CDN with the sha256 on the redirect; the file is
    verified, lands in the store under its name, and is registered as hf.co/owner/repo:q4_k_m."""
    sha_a = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.add_repo_file(REPO, "Tiny-Q8_0.gguf", tiny_files["b"])
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert "Tiny-Q4_K_M.gguf" in r.stdout and "sha256 verified" in r.stdout
    assert "pulled hf.co/owner/tiny-gguf:q4_k_m" in r.stdout
    got = store(tmp_path) / "Tiny-Q4_K_M.gguf"
    assert sha(got) == sha_a
    assert not (store(tmp_path) / "Tiny-Q8_0.gguf").exists()
    assert registered(tmp_path, "hf.co/owner/Tiny-GGUF:Q4_K_M") == got.resolve()
    paths = [e["path"] for e in host.log]
    assert f"/{REPO}/resolve/main/Tiny-Q4_K_M.gguf" in paths and f"/cdn/{sha_a}" in paths
    assert [p.name for p in store(tmp_path).iterdir()] == ["Tiny-Q4_K_M.gguf"]   # no partial left beside it
    ran = run_hypura("run", "hf.co/owner/tiny-gguf:q4_k_m", "--raw", "--temp", "0", "-n", "4", "-p", "hello", "--json",
                     env={"HYPURA_MODELS": str(tmp_path / "models")}, timeout=120)   # the registered name runs
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["path"] == str(got.resolve()) and json.loads(ran.stdout)["eval_tokens"] == 4
    again = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")                         # already here: checked, not fetched
    assert again.returncode == 0 and "already here" in again.stdout
    assert sum(1 for e in host.log if e["path"] == f"/cdn/{sha_a}" and e["method"] == "GET") == 1


def test_pull_a_split_set(host, tiny_files, tmp_path):
    from hypura_placement import read_header

    for i in (1, 2, 3):
        host.add_repo_file(REPO, f"Q8_0/{tiny_files[f'shard{i}'].name}", tiny_files[f"shard{i}"])
    host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF:q8_0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("sha256 verified") == 3
    first = store(tmp_path) / "Tiny-Q8_0-00001-of-00003.gguf"
    for i in (1, 2, 3):
        assert sha(store(tmp_path) / tiny_files[f"shard{i}"].name) == sha(tiny_files[f"shard{i}"])
    assert len(read_header(first).tensors) == len(read_header(tiny_files["b"]).tensors)
    assert registered(tmp_path, "hf.co/owner/tiny-gguf:q8_0") == first.resolve()


def test_interrupted_download_resumes_with_range(host, tiny_files, tmp_path):
    """A connection dropped at byte N leaves only the partial file; the next pull asks for bytes=N- with the
    validator (If-Range) and appends; the result is the host's file, verified."""
    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.cut_after[key] = 3 << 20
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF", "--retries", "0")
    assert r.returncode == 2
    assert f"download interrupted at byte {3 << 20}" in r.stderr and "run the command again" in r.stderr
    final = store(tmp_path) / "Tiny-Q4_K_M.gguf"
    partial = store(tmp_path) / ".Tiny-Q4_K_M.gguf.partial"
    assert not final.exists() and partial.stat().st_size == 3 << 20
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert f"resumed at byte {3 << 20}" in r.stdout
    gets = [e for e in host.requests_for(key) if e["method"] == "GET"]
    assert gets[-1]["range"] == f"bytes={3 << 20}-" and gets[-1]["if_range"]
    assert host.sent[key] == tiny_files["a"].stat().st_size        # every byte sent once
    assert sha(final) == key and not partial.exists()


def test_a_dropped_connection_is_resumed_within_one_pull(host, tiny_files, tmp_path):
    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.cut_after[key] = 1 << 20
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert [e["range"] for e in host.requests_for(key) if e["method"] == "GET"] == [None, f"bytes={1 << 20}-"]
    assert sha(store(tmp_path) / "Tiny-Q4_K_M.gguf") == key


def test_a_changed_file_starts_over(host, tiny_files, tmp_path):
    """The partial came from an older version (another validator): If-Range gets the whole file, 200."""
    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.cut_after[key] = 1 << 20
    assert pull(host, tmp_path, "hf.co/owner/Tiny-GGUF", "--retries", "0").returncode == 2
    host.etags[key] = '"a-new-version"'
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert "resumed" not in r.stdout
    assert sha(store(tmp_path) / "Tiny-Q4_K_M.gguf") == key


def test_sha256_mismatch_is_an_error_and_leaves_no_file(host, tiny_files, tmp_path):
    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.corrupt.add(key)
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 2
    assert f"sha256 mismatch: the host publishes {key}" in r.stderr
    assert "nothing was written under Tiny-Q4_K_M.gguf" in r.stderr
    assert list(store(tmp_path).iterdir()) == []
    from hypura_engine import ModelNotFound

    with pytest.raises(ModelNotFound):
        registered(tmp_path, "hf.co/owner/tiny-gguf:q4_k_m")


def test_pull_a_plain_url(host, tiny_files, tmp_path):
    """No listing: size from the answer, no sha256 published (the ETag is not one): size-checked; the name is
    the file's stem."""
    url = host.add_plain_file("Small-Model.Q8_0.gguf", tiny_files["b"])
    r = pull(host, tmp_path, url)
    assert r.returncode == 0, r.stderr
    assert "size checked (the host publishes no sha256)" in r.stdout
    assert "pulled small-model.q8_0:latest" in r.stdout
    got = registered(tmp_path, "small-model.q8_0")
    assert sha(got) == sha(tiny_files["b"])
    assert got.parent == (tmp_path / "models" / "hub" / "127.0.0.1_" / "files").resolve() or "files" in got.parts


def test_unknown_quant_and_repo_are_one_line_errors(host, tiny_files, tmp_path):
    host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF:Q2_K")
    assert r.returncode == 2 and "no Q2_K file in the repository (quantizations there: Q4_K_M)" in r.stderr
    r = pull(host, tmp_path, "hf.co/owner/Nope")
    assert r.returncode == 2 and "HTTP 404" in r.stderr and "Traceback" not in r.stderr


def test_a_second_pull_of_the_same_file_at_once_is_refused(host, tiny_files, tmp_path):
    """The CLI and a server share the store: one partial file must have one writer."""
    from hypura_hub.download import _exclusive, fetch

    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    target = tmp_path / "Tiny-Q4_K_M.gguf"
    url = f"{host.url}/{REPO}/resolve/main/Tiny-Q4_K_M.gguf"
    with _exclusive(target):
        r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")       # another store: not blocked
        assert r.returncode == 0, r.stderr
        with pytest.raises(HubError, match="another pull is downloading this file now"):
            fetch(url, target, sha256=key)
    assert fetch(url, target, sha256=key).sha256 == key            # released: the lock file is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Tiny-Q4_K_M.gguf", "models"]


def test_a_partial_file_that_is_already_whole_is_checked_and_renamed(host, tiny_files, tmp_path):
    """A pull stopped after its last byte but before the rename: the next asks for bytes=SIZE-, gets 416, checks
    the sha256 and renames (nothing downloaded again)."""
    import json as _json

    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    size = tiny_files["a"].stat().st_size
    d = store(tmp_path)
    d.mkdir(parents=True)
    (d / ".Tiny-Q4_K_M.gguf.partial").write_bytes(tiny_files["a"].read_bytes())
    (d / ".Tiny-Q4_K_M.gguf.partial.json").write_text(_json.dumps(
        {"url": f"{host.url}/{REPO}/resolve/main/Tiny-Q4_K_M.gguf", "etag": None, "size": size, "sha256": key}))
    r = pull(host, tmp_path, "hf.co/owner/Tiny-GGUF")
    assert r.returncode == 0, r.stderr
    assert [e["range"] for e in host.requests_for(key)] == [f"bytes={size}-"] and host.sent[key] == 0
    assert sha(d / "Tiny-Q4_K_M.gguf") == key and sorted(p.name for p in d.iterdir()) == ["Tiny-Q4_K_M.gguf"]


def test_the_token_goes_to_the_hub_not_to_the_cdn(host, tiny_files, tmp_path):
    """HF_TOKEN is sent to the Hub (listing, resolve) and dropped when the redirect leaves for another host."""
    key = host.add_repo_file(REPO, "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.cdn_elsewhere = True
    r = run_hypura("pull", "-q", "hf.co/owner/Tiny-GGUF", env={"HF_ENDPOINT": host.url, "HF_TOKEN": "hf_secret",
                                                             "HYPURA_MODELS": str(tmp_path / "models")}, timeout=120)
    assert r.returncode == 0, r.stderr
    hub = [e for e in host.log if not e["path"].startswith("/cdn/")]
    cdn = host.requests_for(key)
    assert hub and all(e["authorization"] == "Bearer hf_secret" for e in hub)
    assert cdn and all(e["host"].startswith("localhost:") and e["authorization"] is None for e in cdn)
    assert sha(store(tmp_path) / "Tiny-Q4_K_M.gguf") == key

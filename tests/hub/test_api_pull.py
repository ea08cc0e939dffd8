"""``/api/pull`` of a Hugging Face name on a real server, through the real ``ollama`` client: the download
streams Ollama's progress lines, and the model is then listed and shown; errors end the stream as Ollama's do."""
from __future__ import annotations

import threading

import pytest


@pytest.fixture()
def server(tmp_path, host, monkeypatch):
    from hypura_server import Settings, create_app, make_server

    monkeypatch.setenv("HF_ENDPOINT", host.url)
    settings = Settings(models_dir=tmp_path / "models", ollama_dir=tmp_path / "ollama", host="127.0.0.1")
    app = create_app(settings)
    srv = make_server(app, "127.0.0.1", 0, threads=4)
    threading.Thread(target=srv.run, daemon=True).start()
    yield f"http://127.0.0.1:{srv.effective_port}", settings
    srv.close()
    app.extensions["hypura"].manager.close()


def test_api_pull_streams_ollama_progress_and_registers(server, host, tiny_files):
    import ollama

    url, settings = server
    sha = host.add_repo_file("owner/Tiny-GGUF", "Tiny-Q8_0.gguf", tiny_files["b"])
    host.add_repo_file("owner/Tiny-GGUF", "Tiny-Q4_K_M.gguf", tiny_files["a"])
    client = ollama.Client(host=url, timeout=60)
    events = list(client.pull("hf.co/owner/Tiny-GGUF:Q8_0", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-2:] == ["writing manifest", "success"]
    downloading = [e for e in events if e.status == f"downloading sha256:{sha}"]
    assert downloading and all(e.digest == f"sha256:{sha}" for e in downloading)
    assert downloading[-1].completed == downloading[-1].total == tiny_files["b"].stat().st_size
    assert "verifying sha256 digest" in statuses
    names = [m.model for m in client.list().models]
    assert "hf.co/owner/tiny-gguf:q8_0" in names
    assert client.show("hf.co/owner/tiny-gguf:q8_0").details.family == "llama"
    assert client.pull("hf.co/owner/Tiny-GGUF:Q8_0", stream=False).status == "success"   # again: checked, kept


def test_api_pull_errors(server, host, tiny_files):
    import ollama

    url, _ = server
    host.add_repo_file("owner/Tiny-GGUF", "Tiny-Q4_K_M.gguf", tiny_files["a"])
    client = ollama.Client(host=url, timeout=60)
    with pytest.raises(ollama.ResponseError, match="no Q2_K file in the repository") as exc:
        client.pull("hf.co/owner/Tiny-GGUF:Q2_K", stream=False)
    assert exc.value.status_code == 404
    with pytest.raises(ollama.ResponseError, match="sha256 mismatch"):       # streamed: the error line ends it
        host.corrupt.add(host.sha[tiny_files["a"]])
        list(client.pull("hf.co/owner/Tiny-GGUF", stream=True))


def test_a_client_that_hangs_up_stops_the_download_and_the_next_pull_resumes(server, host, tiny_files):
    import http.client
    import json
    import time

    url, settings = server
    key = host.add_repo_file("owner/Tiny-GGUF", "Tiny-Q4_K_M.gguf", tiny_files["a"])
    host.slow[key] = 0.02                                   # ~3 MB/s: the client leaves after a few lines
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/pull", json.dumps({"model": "hf.co/owner/Tiny-GGUF"}), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    seen = [json.loads(resp.readline()) for _ in range(4)]
    assert seen[0]["status"] == "pulling manifest" and seen[-1]["status"].startswith("downloading sha256:")
    resp.close()                                            # hang up
    conn.close()
    store = settings.models_dir / "hub" / "hf.co" / "owner" / "Tiny-GGUF"
    time.sleep(1.0)
    sent = host.sent[key]
    time.sleep(1.5)                                         # going on, the whole file would be sent by now
    assert host.sent[key] == sent < tiny_files["a"].stat().st_size   # the download stopped when the client left
    assert not (store / "Tiny-Q4_K_M.gguf").exists()
    have = (store / ".Tiny-Q4_K_M.gguf.partial").stat().st_size
    assert 0 < have < tiny_files["a"].stat().st_size
    host.slow.clear()
    import ollama

    assert ollama.Client(host=url, timeout=60).pull("hf.co/owner/Tiny-GGUF").status == "success"
    gets = [e for e in host.requests_for(key) if e["method"] == "GET"]
    assert gets[-1]["range"] == f"bytes={have}-"

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

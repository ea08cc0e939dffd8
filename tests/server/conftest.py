"""One real server per test session: the Flask app on waitress, on a free loopback port, with the
real engine and the embedded gemma3:270m, a temporary models directory and an empty Ollama store."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from server_support import MAX_BODY, Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, default_model: Path) -> Server:
    from hypura_server import Settings, create_app, make_server

    models = tmp_path_factory.mktemp("models")
    ollama = tmp_path_factory.mktemp("ollama")
    settings = Settings(models_dir=models, ollama_dir=ollama, ctx=1024, keep_alive=300.0, max_loaded=1,
                        max_body=MAX_BODY)
    app = create_app(settings)
    srv = make_server(app, "127.0.0.1", 0, threads=8)
    thread = threading.Thread(target=srv.run, name="hypura-test-server", daemon=True)
    thread.start()
    yield Server("127.0.0.1", srv.effective_port, models, ollama, app)
    srv.close()
    app.extensions["hypura"].manager.close()


@pytest.fixture()
def ollama_client(server: Server):
    import ollama

    return ollama.Client(host=server.url, timeout=120)


@pytest.fixture()
def openai_client(server: Server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="hypura", timeout=120, max_retries=0)

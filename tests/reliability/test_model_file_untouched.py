"""The model file is never written: size, mtime and sha256 are unchanged, and nothing new appears beside it,
after `hypura run` (resident and the planner's auto mode), `hypura inspect`/`plan`, and `hypura serve`
(generation, chat, embeddings, /api/show, /api/ps, create/copy/delete of names pointing at it, unload)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import run_hypura
from soak import ServeProcess, request


def _state(path: Path) -> tuple:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    st = path.stat()
    return st.st_size, st.st_mtime_ns, h.hexdigest(), sorted(os.listdir(path.parent))


@pytest.fixture()
def model_dir(tmp_path, tiny_models):
    d = tmp_path / "store"
    d.mkdir()
    shutil.copyfile(tiny_models["dense"], d / "m.gguf")
    os.chmod(d, 0o755)
    return d / "m.gguf"


def test_cli_never_writes_the_model(model_dir):
    before = _state(model_dir)
    for args in (["run", str(model_dir), "--raw", "--temp", "0", "-n", "8", "-p", "hi", "--mode", "resident"],
                 ["run", str(model_dir), "-n", "4", "-p", "hi"], ["inspect", str(model_dir)],
                 ["plan", str(model_dir), "--hardware", "cpu-2c-24g"]):
        res = run_hypura(*args, timeout=120)
        assert res.returncode == 0, res.stderr[-1000:]
        assert _state(model_dir) == before, args


def test_server_never_writes_the_model(model_dir, tmp_path):
    before = _state(model_dir)
    models = tmp_path / "served"      # the server's own store is elsewhere: the model is registered by path
    models.mkdir()
    # /api/create reads FROM paths only inside the models directory or the configured roots (issue 19)
    with ServeProcess(models, "--mode", "resident", "--ctx", "256", "--threads", "1",
                      env={"HYPURA_CREATE_PATHS": str(model_dir.parent)}) as srv:
        gen = {"prompt": "hi", "stream": False, "options": {"num_predict": 8}}
        calls = [("POST", "/api/create", {"model": "m", "from": str(model_dir)}),
                 ("POST", "/api/generate", {"model": "m", **gen}),
                 ("POST", "/api/generate", {"model": "m", "prompt": "hi", "options": {"num_predict": 8}}),
                 ("POST", "/api/chat", {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]}),
                 ("POST", "/api/embed", {"model": "m", "input": ["a", "b"]}),
                 ("POST", "/api/show", {"model": "m"}), ("GET", "/api/ps", None), ("GET", "/api/tags", None),
                 ("POST", "/api/copy", {"source": "m", "destination": "m2"}),
                 ("POST", "/api/generate", {"model": "m2", **gen}),
                 ("DELETE", "/api/delete", {"model": "m2"}), ("DELETE", "/api/delete", {"model": "m"}),
                 ("POST", "/api/generate", {"model": "m", "keep_alive": 0})]
        for method, path, body in calls:
            status, out = request(srv.url, method, path, body)
            assert status in (200, 404) if path == "/api/generate" and body.get("keep_alive") == 0 else status == 200, \
                (path, status, out[:300])
            assert _state(model_dir) == before, (method, path)
    assert _state(model_dir) == before
    assert model_dir.exists()       # /api/delete of a registered name never deletes a file outside the store

"""The server process loads no native code: it parses requests and reads GGUF headers in Python,
and every model runs in a worker process. Checked in a fresh interpreter, after real requests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from pathlib import Path

import hypura_server
from hypura_server import Settings, create_app

native = lambda: sorted(m for m in sys.modules if m.startswith("hypura_llama"))
after_import = native()
models, ollama = Path(sys.argv[1]), Path(sys.argv[2])
app = create_app(Settings(models_dir=models, ollama_dir=ollama, ctx=256, keep_alive=0.0, max_loaded=1))
client = app.test_client()
tags = client.get("/api/tags").get_json()
name = tags["models"][0]["name"]
show = client.post("/api/show", json={"model": name})
gen = client.post("/api/generate", json={"model": name, "prompt": "Hi", "stream": False,
                                         "options": {"num_predict": 2, "temperature": 0}})
app.extensions["hypura"].manager.close()
print(json.dumps({"after_import": after_import, "after_requests": native(), "show": show.status_code,
                  "generate": gen.status_code, "done": gen.get_json().get("done")}))
"""


def test_server_process_imports_no_native_code(tmp_path: Path, default_model: Path) -> None:
    models, ollama = tmp_path / "models", tmp_path / "ollama"
    models.mkdir()
    ollama.mkdir()
    (models / "tiny.gguf").symlink_to(default_model)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(models), str(ollama)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_import"] == [], "import hypura_server loaded the binding"
    assert result["show"] == 200 and result["generate"] == 200 and result["done"] is True
    assert result["after_requests"] == [], "serving requests loaded the binding in the server process"

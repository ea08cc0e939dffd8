"""Constants and the raw-HTTP helper shared by the server tests."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GREEDY = {"temperature": 0, "num_predict": 8}
MODEL = "gemma3:270m"
MAX_BODY = 1 << 20

@dataclass
class Server:
    host: str
    port: int
    models_dir: Path
    ollama_dir: Path
    app: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP exchange: (status, headers, body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()



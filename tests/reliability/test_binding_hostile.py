"""`hypura serve` binds to loopback unless told otherwise, and warns when bound to a wider address."""
from __future__ import annotations

import json

from soak import ServeProcess, request

CLEAN = {"HYPURA_HOST": "", "OLLAMA_HOST": "", "HYPURA_PORT": "", "HYPURA_CONFIG": "/nonexistent/hypura.toml"}


def test_default_is_loopback_without_warning(tmp_path):
    with ServeProcess(tmp_path, "--mode", "resident", host=None, env=CLEAN) as srv:
        assert srv.bound == "127.0.0.1"
        assert request(srv.url, "GET", "/api/version")[0] == 200
        assert not any("warning" in line for line in srv.lines), srv.lines


def test_wider_address_warns(tmp_path):
    with ServeProcess(tmp_path, "--mode", "resident", host="0.0.0.0", env=CLEAN) as srv:
        status, body = request(srv.url, "GET", "/api/version")
        assert status == 200 and json.loads(body)["version"]
        warnings = [line for line in srv.lines if line.startswith("warning:")]
        assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "no authentication" in warnings[0], srv.lines

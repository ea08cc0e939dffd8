"""`hypura serve`: the app under waitress, which streams each token as it is written.

Why waitress: pure Python, production grade, threads (generation is blocking native code that
releases the GIL), and since 3.0 it flushes every write from the worker thread at once
(``send_bytes`` = 1), so NDJSON/SSE chunks reach the client token by token (tests prove it).
With ``channel_request_lookahead`` it also keeps reading a connection while its request runs and
exposes ``waitress.client_disconnected``: a client that goes away cancels its generation at once.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from typing import Any

from waitress.server import create_server

from .app import create_app
from .state import Settings

log = logging.getLogger("hypura.server")
THREADS = 16   # requests queue per model in the app, so threads only bound concurrent connections


def make_server(app: Any, host: str, port: int, threads: int = THREADS) -> Any:
    """A waitress server bound to host:port (port 0: a free one; read ``server.effective_port``)."""
    return create_server(app, host=host, port=port, threads=threads, channel_request_lookahead=1,
                         max_request_body_size=1 << 40, clear_untrusted_proxy_headers=True,
                         ident="hypura", asyncore_use_poll=True)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def settings_from_config(cfg: Any, **extra: Any) -> Settings:
    """`hypura.config.Config` (+ serve's own flags) → Settings."""
    origins = [o.strip() for o in os.environ.get("OLLAMA_ORIGINS", "").split(",") if o.strip()]
    kw = {k: v for k, v in extra.items() if v is not None}
    return Settings(models_dir=cfg.models_dir, ctx=cfg.ctx, gpu_budget=cfg.gpu_budget,
                    ram_budget=cfg.ram_budget, origins=origins, **kw)


def serve(cfg: Any, **extra: Any) -> int:
    """Serve until interrupted. `cfg` is hypura.config.Config; `extra` sets Settings fields."""
    settings = extra.pop("settings", None) or settings_from_config(cfg, **extra)
    app = create_app(settings)
    if not is_loopback(cfg.host):
        print(f"warning: serving on {cfg.host}, a non-loopback address: anyone who can reach it can use "
              "and manage your models (there is no authentication)", file=sys.stderr)
    server = make_server(app, cfg.host, cfg.port)
    print(f"hypura: serving the Ollama API on http://{cfg.host}:{server.effective_port} "
          f"(models: {settings.models_dir}; mode {settings.mode}; ctx {settings.ctx})", file=sys.stderr)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.extensions["hypura"].manager.close()
    return 0

"""`hypura serve`: the app under waitress, which streams each token as it is written.

Why waitress: pure Python, production grade, threads (generation is blocking native code that
releases the GIL), and since 3.0 it flushes every write from the worker thread at once
(``send_bytes`` = 1), so NDJSON/SSE chunks reach the client token by token (tests prove it).
With ``channel_request_lookahead`` it also keeps reading a connection while its request runs and
exposes ``waitress.client_disconnected``: a client that goes away cancels its generation at once.
"""
from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server
from waitress.utilities import RequestEntityTooLarge

from .app import create_app
from .state import Settings

log = logging.getLogger("hypura.server")
THREADS = 16   # requests queue per model in the app, so threads only bound concurrent connections


DRAIN_MAX = 2 << 30   # an over-limit body up to this size is read and thrown away (then 413); larger: cut off


class _Discard:
    """A request-body buffer that keeps nothing (an over-limit body is read to its end, not stored)."""

    def __init__(self) -> None:
        self.n = 0

    def append(self, data: bytes) -> None:
        self.n += len(data)

    def __len__(self) -> int:
        return 0

    def getfile(self) -> Any:
        return io.BytesIO()

    def close(self) -> None:
        pass


class _TooLarge(RequestEntityTooLarge):
    """Waitress' 413, as the API's JSON error (OpenAI's shape under /v1)."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(f"request body too large (at most {limit} bytes for {path.split('?')[0][:100]})")
        self.path = path

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        msg = self.body
        body = ({"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": None}}
                if self.path.startswith("/v1/") else {"error": msg})
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], json.dumps(body).encode()


def _parser_for(limits: Any) -> type:
    """A request parser that applies `limits(path)` (bytes) while the body is read: an over-limit body is
    not buffered (it is drained, then answered 413), whatever its framing (Content-Length or chunked)."""

    class Parser(HTTPRequestParser):
        _limit: int | None = None
        _discard: _Discard | None = None

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            self._limit = limits(self.path or "")
            if self.body_rcv is not None and not self.chunked and self.content_length > self._limit:
                if self.content_length > self._limit + DRAIN_MAX:   # not worth reading: refuse at once
                    self.error = _TooLarge(self.path or "", self._limit)
                    self.completed = True
                else:
                    self._drop()

        def _drop(self) -> None:
            self._discard = _Discard()
            self.body_rcv.buf = self._discard   # type: ignore[union-attr]

        def received(self, data: bytes) -> int:
            n = super().received(data)
            if self._limit is not None and self.error is None:
                if self._discard is None and self.chunked and self.body_bytes_received > self._limit:
                    self._drop()
                if self._discard is not None and (self.completed or self._discard.n > DRAIN_MAX):
                    self.error = _TooLarge(self.path or "", self._limit)
                    self.completed = True
            elif isinstance(self.error, RequestEntityTooLarge) and not isinstance(self.error, _TooLarge):
                self.error = _TooLarge(self.path or "", self._limit or 0)
            return n

    return Parser


def make_server(app: Any, host: str, port: int, threads: int = THREADS) -> Any:
    """A waitress server bound to host:port (port 0: a free one; read ``server.effective_port``).
    Request bodies are limited per route while they are read: blob uploads up to `Settings.max_blob`
    (streamed to waitress' spool file), everything else `Settings.max_body`."""
    settings = app.extensions["hypura"].settings if "hypura" in getattr(app, "extensions", {}) else Settings(Path("."))

    def limits(path: str) -> int:
        return settings.max_blob if path.startswith("/api/blobs/") else settings.max_body

    server = create_server(app, host=host, port=port, threads=threads, channel_request_lookahead=1,
                           max_request_body_size=settings.max_blob + 1, clear_untrusted_proxy_headers=True,
                           ident="hypura", asyncore_use_poll=True)

    class Channel(HTTPChannel):
        parser_class = _parser_for(limits)

    server.channel_class = Channel
    return server


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
    def env_list(name: str) -> list[str]:
        return [o.strip() for o in os.environ.get(name, "").split(",") if o.strip()]

    kw = {k: v for k, v in extra.items() if v is not None}
    return Settings(models_dir=cfg.models_dir, ctx=cfg.ctx, gpu_budget=cfg.gpu_budget,
                    ram_budget=cfg.ram_budget, origins=env_list("OLLAMA_ORIGINS"), host=cfg.host,
                    allowed_hosts=env_list("HYPURA_ALLOWED_HOSTS"),
                    create_roots=[Path(p).expanduser() for p in env_list("HYPURA_CREATE_PATHS")], **kw)


def serve(cfg: Any, **extra: Any) -> int:
    """Serve until interrupted. `cfg` is hypura.config.Config; `extra` sets Settings fields."""
    settings = extra.pop("settings", None) or settings_from_config(cfg, **extra)
    if settings.host is None:
        settings.host = cfg.host      # the Host-header check follows the address actually bound
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

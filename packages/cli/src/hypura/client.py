"""The command line's client for the Ollama API of a running `hypura serve` (or `ollama serve`): stdlib only.

Where the server is, as ``ollama`` finds it: ``HYPURA_HOST``, else ``OLLAMA_HOST`` (``host[:port]``, scheme
optional (``http``), ``[v6]:port``, a path prefix allowed; default ``127.0.0.1:11434``; ``http://host`` means
port 80, ``https://host`` 443), ``HYPURA_PORT`` and the configuration file's ``host``/``port`` as for
`hypura serve` (`hypura.config`). An unspecified bind address (``0.0.0.0``, ``::``) is reached on loopback.

Commands that make sense without a server (``list``, ``show``, ``rm``, ``cp``, ``create``, ``run``) fall back to
`local_server`: the same Flask app, in this process, on a free loopback port, for the life of the command —
so a server and no server answer alike, through one code path.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from .config import HOST_ENV, load_config

PROBE_TIMEOUT_S = 2.0


class ServerError(ValueError):
    """The server answered with an error (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def server_url(env: Mapping[str, str] | None = None) -> str:
    """The base URL of the server the commands talk to (no trailing slash)."""
    env = os.environ if env is None else env
    cfg = load_config(env=env)
    raw = next((env[v].strip() for v in reversed(HOST_ENV) if env.get(v, "").strip()), "")
    scheme, sep, rest = raw.partition("://")
    scheme, rest = (scheme.lower(), rest) if sep else ("http", raw)
    prefix = rest.partition("/")[2].strip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.host, cfg.host)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{cfg.port}" + (f"/{prefix}" if prefix else "")


class Stream:
    """A streamed POST whose NDJSON objects are read as they come: the request is sent when iteration
    starts (the server answers after the prompt is evaluated). `abort`, from any thread, drops the
    connection — before or during the answer — so the server sees its client leave and stops generating."""

    def __init__(self, client: Client, path: str, body: dict[str, Any]) -> None:
        self._client, self._path, self._body = client, path, body
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self.aborted = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            resp = self._client._send("POST", self._path, {**self._body, "stream": True}, self._client.timeout,
                                      on_connect=self._connected)
            for line in resp:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("error"):
                    raise ServerError(500, str(obj["error"]))
                yield obj
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self.aborted:
                return
            if isinstance(exc, ServerError):
                raise
            raise ServerError(0, f"the server stopped answering: {exc}") from None
        finally:
            self.close()

    def _connected(self, conn: http.client.HTTPConnection) -> None:
        self._conn, self._sock = conn, conn.sock   # the socket: http.client drops conn.sock once it responds
        if self.aborted:
            self.abort()

    def abort(self) -> None:
        self.aborted = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class Client:
    """Requests to one server. JSON in, JSON out; errors as `ServerError` with the server's message."""

    def __init__(self, url: str, timeout: float | None = None, local: bool = False) -> None:
        self.url = url.rstrip("/")
        scheme, _, rest = self.url.partition("://")
        hostport, _, prefix = rest.partition("/")
        self._https = scheme == "https"
        self._hostport = hostport
        self._prefix = "/" + prefix if prefix else ""
        self.timeout = timeout
        self.local = local   # a private in-process server (`local_server`), not one the user started

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._hostport, timeout=timeout)

    def _send(self, method: str, path: str, body: Any, timeout: float | None, raw: Any = None,
              headers: dict[str, str] | None = None, on_connect: Callable[[Any], None] | None = None):
        """Send one request; the response (status < 400) or ServerError. Read and close it via `_read`."""
        conn = self._connect(timeout)
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        try:
            conn.connect()
            if on_connect is not None:
                on_connect(conn)
            conn.request(method, self._prefix + path, body=data, headers=hdrs)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServerError(0, f"could not reach the server at {self.url} ({exc})") from None
        if resp.status >= 400:
            text = resp.read().decode("utf-8", "replace")
            conn.close()
            try:
                message = json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                message = text.strip() or resp.reason
            raise ServerError(resp.status, str(message))
        resp.conn_to_close = conn   # type: ignore[attr-defined]
        return resp

    @staticmethod
    def _read(resp: http.client.HTTPResponse) -> bytes:
        try:
            return resp.read()
        finally:
            resp.conn_to_close.close()   # type: ignore[attr-defined]

    def request(self, method: str, path: str, body: Any = None, *, raw: Any = None,
                headers: dict[str, str] | None = None) -> Any:
        """One exchange; the parsed JSON body (None when empty, the text when not JSON)."""
        text = self._read(self._send(method, path, body, self.timeout, raw, headers)).decode("utf-8", "replace")
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def stream(self, path: str, body: dict[str, Any]) -> Stream:
        """POST with ``stream: true``; iterating the returned `Stream` sends it and yields the NDJSON objects."""
        return Stream(self, path, body)

    def alive(self) -> bool:
        """True when an Ollama-compatible server answers ``/api/version`` within `PROBE_TIMEOUT_S`."""
        try:
            return isinstance(json.loads(self._read(self._send("GET", "/api/version", None, PROBE_TIMEOUT_S))
                                         or b"null"), dict)
        except (ServerError, ValueError, OSError, http.client.HTTPException):
            return False

    def blob_path(self, digest: str) -> str:
        return "/api/blobs/" + quote(digest, safe=":")


def no_server(url: str) -> ServerError:
    return ServerError(0, f"no server answers at {url}: start one with `hypura serve` (or set HYPURA_HOST/OLLAMA_HOST)")


@contextmanager
def signals_stay_with_main_thread() -> Iterator[None]:
    """Threads started inside this block never take SIGINT: Ctrl-C reaches the main thread (the chat's), which
    the kernel would not wake if it delivered the signal to a server thread (readline would wait for a key)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def local_server(**settings: Any) -> Iterator[Client]:
    """The API served from this process on a free loopback port until the block ends; `settings` are
    `hypura_server.Settings` fields (``mode``, ``n_threads``, ``create_roots`` …) over the configuration's."""
    from hypura_server import create_app, make_server
    from hypura_server.wsgi import settings_from_config

    cfg = load_config({"gpu_budget": settings.pop("gpu_budget", None), "ram_budget": settings.pop("ram_budget", None),
                       "ctx": settings.pop("ctx", None)})
    extra_roots = settings.pop("create_roots", [])
    conf = settings_from_config(cfg, mode=settings.pop("mode", None) or "auto")
    for key, value in settings.items():   # models_dir, n_threads ...: over what the configuration says
        if value is not None:
            setattr(conf, key, value)
    conf.host = "127.0.0.1"
    conf.create_roots += list(extra_roots)
    with signals_stay_with_main_thread():   # the app's, waitress' and their children's threads
        app = create_app(conf)
        srv = make_server(app, "127.0.0.1", 0, threads=4)
        thread = threading.Thread(target=srv.run, name="hypura-local-server", daemon=True)
        thread.start()
    try:
        yield Client(f"http://127.0.0.1:{srv.effective_port}", local=True)
    finally:   # models first (a generation still running ends), then the request threads, then the socket
        app.extensions["hypura"].manager.close()
        srv.task_dispatcher.shutdown(timeout=5)
        srv.close()


@contextmanager
def connect(fallback: bool = True, **settings: Any) -> Iterator[Client]:
    """The running server if one answers; else, with `fallback`, a `local_server(**settings)`; else
    ServerError saying that no server answers."""
    client = Client(server_url())
    if client.alive():
        yield client
        return
    if not fallback:
        raise no_server(client.url)
    with local_server(**settings) as local:
        yield local

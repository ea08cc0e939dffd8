"""The Flask app factory: blueprints per API family, Ollama-style errors, CORS and Host checks."""
from __future__ import annotations

import fnmatch
import ipaddress
import logging
import socket

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from hypura_engine import LoadOptions, Registry

from . import models_api, ollama_api, openai_api
from .drafts import draft_lookup
from .errors import APIError, error_body
from .manager import ModelManager
from .modelinfo import context_limit
from .openapi import SPEC
from .state import Settings, State

log = logging.getLogger("hypura.server")

DEFAULT_ORIGINS = [f"{scheme}://{host}" for scheme in ("http", "https") for host in ("localhost", "127.0.0.1", "0.0.0.0")]
DEFAULT_ORIGINS += [f"{o}:*" for o in DEFAULT_ORIGINS]
DEFAULT_ORIGINS += ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def create_app(settings: Settings, manager: ModelManager | None = None) -> Flask:
    """Build the app. Without `manager`, one is made from `settings` (loads models on demand)."""
    app = Flask("hypura_server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    registry = Registry(settings.models_dir, settings.ollama_dir)
    if manager is None:
        load = LoadOptions(mode=settings.mode, ctx=settings.ctx, gpu_budget=settings.gpu_budget,
                           ram_budget=settings.ram_budget, n_threads=settings.n_threads,
                           draft_max=settings.draft_max)
        manager = ModelManager(load, settings.keep_alive, settings.max_loaded, context_limit,
                               draft_for=draft_lookup(settings.drafts, registry))
    app.extensions["hypura"] = State(settings, registry, manager)

    app.register_blueprint(models_api.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_blueprint(openai_api.bp)
    app.add_url_rule("/openapi.json", "openapi", _openapi)
    _install_hosts(app, settings)
    _install_cors(app, DEFAULT_ORIGINS + list(settings.origins))
    _install_errors(app)
    return app


def _openapi() -> Response:
    return jsonify(SPEC)


def _bound_to_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def host_allowed(host_header: str, extra: list[str]) -> bool:
    """Ollama's rule for a loopback-bound server: the Host is an IP literal that is loopback, private or
    unspecified, ``localhost`` (or ``*.localhost``/``*.local``/``*.internal``), this machine's name, or
    matches one of `extra` (fnmatch patterns; ``*`` allows any). A DNS-rebinding page has its own name."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if any(fnmatch.fnmatchcase(host, p.lower()) for p in extra if p):
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified
    except ValueError:
        pass
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith((".localhost", ".local", ".internal"))


def _install_hosts(app: Flask, settings: Settings) -> None:
    """DNS-rebinding defence (as Ollama): a server bound to loopback answers 403 to other Host names."""
    if not _bound_to_loopback(settings.host):
        return
    extra = list(settings.allowed_hosts)

    @app.before_request
    def _host() -> Response | None:
        if not host_allowed(request.headers.get("Host", ""), extra):
            body, status = error_body(403, "forbidden: this server answers only to local Host names "
                                           "(allow others with HYPURA_ALLOWED_HOSTS)")
            return jsonify(body), status   # type: ignore[return-value]
        return None


def _origin_allowed(origin: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns if p)


def _install_cors(app: Flask, patterns: list[str]) -> None:
    """Ollama's CORS: local and app origins (plus OLLAMA_ORIGINS) allowed; other origins get 403."""
    @app.before_request
    def _preflight() -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if not _origin_allowed(origin, patterns):
            return Response(status=403)
        if request.method == "OPTIONS":
            return Response(status=204)
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and _origin_allowed(origin, patterns):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
            resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            resp.headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", "Authorization, Content-Type, User-Agent, Accept, X-Requested-With")
            resp.headers["Access-Control-Max-Age"] = "43200"
        return resp


def _install_errors(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api(exc: APIError) -> tuple[Response, int]:
        body, status = error_body(exc.status, exc.message)
        return jsonify(body), status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = {413: "request body too large", 404: f"{request.path} not found",
                   405: f"method {request.method} not allowed for {request.path}"}.get(status, exc.description or "")
        body, status = error_body(status, message)
        return jsonify(body), status

    @app.errorhandler(Exception)
    def _other(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error in %s %s", request.method, request.path)
        body, status = error_body(500, str(exc) or type(exc).__name__)
        return jsonify(body), status

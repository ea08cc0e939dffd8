"""The Flask app factory: blueprints per API family, Ollama-style errors and CORS."""
from __future__ import annotations

import fnmatch
import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from hypura_engine import LoadOptions, Registry

from .errors import APIError
from .manager import ModelManager
from .modelinfo import context_limit
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
    if manager is None:
        load = LoadOptions(mode=settings.mode, ctx=settings.ctx, gpu_budget=settings.gpu_budget,
                           ram_budget=settings.ram_budget, n_threads=settings.n_threads)
        manager = ModelManager(load, settings.keep_alive, settings.max_loaded, context_limit)
    app.extensions["hypura"] = State(settings, Registry(settings.models_dir, settings.ollama_dir), manager)

    from . import models_api, ollama_api, openai_api

    app.register_blueprint(models_api.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_blueprint(openai_api.bp)
    app.add_url_rule("/openapi.json", "openapi", _openapi)
    _install_cors(app, DEFAULT_ORIGINS + list(settings.origins))
    _install_errors(app)
    return app


def _openapi() -> Response:
    from .openapi import SPEC

    return jsonify(SPEC)


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


def error_body(status: int, message: str) -> tuple[dict[str, Any], int]:
    """Ollama's ``{"error": ...}``, or OpenAI's ``{"error": {message, type, param, code}}`` under /v1."""
    if request.path.startswith("/v1/"):
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                413: "invalid_request_error"}.get(status, "api_error")
        code = "model_not_found" if status == 404 and "model" in message else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}, status
    return {"error": message}, status


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

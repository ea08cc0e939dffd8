"""API errors and request-body parsing shared by every blueprint.

Ollama's error body is ``{"error": "..."}``; the OpenAI blueprint re-shapes the same `APIError`
into OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import json
from typing import Any

from flask import request


class APIError(Exception):
    """An error with an HTTP status, reported to the client as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def error_body(status: int, message: str) -> tuple[dict[str, Any], int]:
    """Ollama's ``{"error": ...}``, or OpenAI's ``{"error": {message, type, param, code}}`` under /v1."""
    if request.path.startswith("/v1/"):
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error"}.get(status, "api_error")
        code = "model_not_found" if status == 404 and "model" in message else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}, status
    return {"error": message}, status


def json_body() -> dict[str, Any]:
    """The request's JSON object. Malformed JSON, a non-object body or a string with a lone surrogate
    (``"\\ud800"``: no UTF-8 form, so no tokenizer can take it) → 400; too large → 413 (while reading)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
        json.dumps(data, ensure_ascii=False).encode("utf-8")   # linear; fails on lone surrogates only
    except UnicodeEncodeError:
        raise bad_request("invalid JSON body: a string holds a lone UTF-16 surrogate") from None
    except ValueError as exc:
        raise bad_request(f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise bad_request("invalid JSON body: nested too deeply") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    return data


def field(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[key]`` checked against `kind` (None or absent → default); a wrong type → 400."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise bad_request(f"field {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise bad_request(f"field {key!r} has the wrong type")
    return value


def model_name(body: dict[str, Any], *keys: str) -> str:
    """The model name from the first present key (``model``, legacy ``name``); missing → 400."""
    for key in keys or ("model", "name"):
        value = body.get(key)
        if value:
            if not isinstance(value, str):
                raise bad_request(f"field {key!r} must be a string")
            return checked_name(value)
    raise bad_request("model is required")


MAX_NAME = 512


def checked_name(name: str) -> str:
    """A model name of sane length (the registry checks its characters); longer → 400."""
    if len(name) > MAX_NAME:
        raise bad_request(f"model name of {len(name)} characters is too long (at most {MAX_NAME})")
    return name

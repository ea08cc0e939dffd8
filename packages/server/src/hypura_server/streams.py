"""Streamed responses: NDJSON (Ollama) and server-sent events (OpenAI), one framing loop for both.

The status line is sent before the first chunk, so an error after it is reported in-band: an
``{"error"}`` line in NDJSON, an error event in SSE (OpenAI's error shape). `close` — the job's
`Started.close`, which gives the model back — runs when the stream ends, fails or the client leaves
(waitress closes the iterator), whichever comes first; it is safe to call more than once.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from flask import Response, stream_with_context

from .errors import APIError, error_body


def _framed(chunks: Iterator[dict[str, Any]], close: Callable[[], None], frame: Callable[[dict[str, Any]], str],
            error: Callable[[int, str], dict[str, Any]], tail: str = "") -> Iterator[str]:
    try:
        for chunk in chunks:
            yield frame(chunk)
    except APIError as exc:
        yield frame(error(exc.status, exc.message))
    except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band, as Ollama does
        yield frame(error(500, str(exc) or type(exc).__name__))
    finally:
        close()
    if tail:
        yield tail


def ndjson(chunks: Iterator[dict[str, Any]], close: Callable[[], None]) -> Response:
    """Stream `chunks` as NDJSON; an error after the first byte becomes an ``{"error"}`` line."""
    body = _framed(chunks, close, lambda c: json.dumps(c, ensure_ascii=False) + "\n",
                   lambda status, message: {"error": message})
    resp = Response(stream_with_context(body), mimetype="application/x-ndjson")
    resp.call_on_close(close)
    return resp


def sse(chunks: Iterator[dict[str, Any]], close: Callable[[], None]) -> Response:
    """Server-sent events, one JSON object per event, then ``data: [DONE]``."""
    body = _framed(chunks, close, lambda c: f"data: {json.dumps(c, ensure_ascii=False)}\n\n",
                   lambda status, message: error_body(status, message)[0], tail="data: [DONE]\n\n")
    resp = Response(stream_with_context(body), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.call_on_close(close)
    return resp

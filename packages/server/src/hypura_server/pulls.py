"""``/api/pull`` of a Hugging Face name (``hf.co/OWNER/REPO[:QUANT]``) or an http(s) URL of a GGUF: the download
runs in the request (``hypura_hub.Pull``: resumable, size- and sha256-checked, atomic) and streams Ollama's
progress lines — ``pulling manifest``, ``downloading <digest>`` with ``digest``/``total``/``completed``, ``verifying
sha256 digest``, ``writing manifest`` (the name registered), ``success`` — or ends with ``{"error": ...}``.
A client that hangs up stops the download (`disconnect.WATCHER` sets the pull's cancel event at once, not when the
next line fails to send); the partial file stays for the next pull to resume."""
from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Response, jsonify, request, stream_with_context

from hypura_hub import HubError, Pull

from .disconnect import WATCHER
from .errors import APIError
from .state import state


def _status(exc: BaseException) -> int:
    text = str(exc)
    if isinstance(exc, ValueError):
        return 400
    return 404 if "HTTP 404" in text or "no " in text and " file" in text else 502


def remote_pull(source: str, stream: bool) -> Response:
    st = state()
    pull = Pull(source, st.registry.models_dir)

    def events() -> Iterator[dict]:
        yield from pull.events()
        assert pull.result is not None
        entry = st.registry.register(pull.result.name, pull.result.path)
        st.manager.unload(entry.name, wait=5.0)     # a model pulled again loads its new file next time
        yield {"status": "writing manifest"}
        yield {"status": "success"}

    if not stream:
        last: dict = {}
        unwatch = WATCHER.watch(request.environ, pull.cancel)
        try:
            for last in events():
                pass
        except (HubError, OSError, ValueError) as exc:
            raise APIError(_status(exc), str(exc)) from None
        finally:
            unwatch()
        return jsonify(last)

    def lines() -> Iterator[str]:
        try:
            for ev in events():
                yield json.dumps(ev) + "\n"
        except (HubError, OSError, ValueError) as exc:
            yield json.dumps({"error": str(exc)}) + "\n"

    unwatch = WATCHER.watch(request.environ, pull.cancel)
    resp = Response(stream_with_context(lines()), mimetype="application/x-ndjson")
    resp.call_on_close(unwatch)
    return resp

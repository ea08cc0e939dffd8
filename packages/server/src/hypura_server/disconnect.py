"""Client-disconnect detection: a request's cancel event is set as soon as its client goes away.

Waitress (with ``channel_request_lookahead`` > 0) keeps reading a connection while its request runs
and puts ``waitress.client_disconnected`` in the WSGI environ; one daemon thread polls those checks
for all running requests, so a generation stops at once — during a queue wait or between tokens —
rather than when the next token fails to send.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

POLL_S = 0.05


class DisconnectWatcher:
    """Polls registered ``(is_disconnected, cancel_event)`` pairs every `POLL_S` seconds."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[Callable[[], bool], threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next = 0

    def watch(self, environ: dict[str, Any], cancel: threading.Event) -> Callable[[], None]:
        """Start watching this request's connection; returns the function that stops watching."""
        check = environ.get("waitress.client_disconnected")
        if check is None:
            return lambda: None
        with self._lock:
            key = self._next
            self._next += 1
            self._watched[key] = (check, cancel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hypura-disconnect", daemon=True)
                self._thread.start()
        return lambda: self._unwatch(key)

    def _unwatch(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                items = list(self._watched.items())
            for key, (check, cancel) in items:
                try:
                    gone = check()
                except Exception:  # the channel is being torn down
                    gone = True
                if gone:
                    cancel.set()
                    self._unwatch(key)
            threading.Event().wait(POLL_S)


WATCHER = DisconnectWatcher()

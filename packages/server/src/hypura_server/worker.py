"""The model worker: one `hypura_engine.Runner` in its own process, driven over a socket.

llama.cpp aborts the whole process on some inputs (``GGML_ASSERT``), so the server never loads a model in
its own process: it starts ``python -m hypura_server.worker FD`` (as Ollama starts its runner) and talks to
it over the inherited socket FD with `multiprocessing.connection` (pickled tuples, length-framed).

Requests (parent → worker), answered in order:
  ``("load", path, LoadOptions, name)`` → ``("ready", info)`` | ``("error", kind, message)`` (then exit)
  ``("tokenize", text, add_special)`` / ``("embed", text)`` → ``("ok", value)`` | ``("error", kind, message)``
  ``("generate", rid, tokens, GenerateOptions)`` → ``("piece", text)``… then ``("done", result, stats)`` | error;
  every `LIVE_EVERY_S` of a generation also ``("stats", stats, pieces)`` (the live page's figures mid-run)
  ``("cancel", rid)`` — out of band: stops generation `rid` between tokens, or inside the decode running
  now through llama.cpp's abort callback (it still ends with ``done``)
  ``("close",)`` — exit.
Test hooks (read only here, only from the environment; never set by Hypura itself):
``HYPURA_TEST_WORKER_ABORT_MARKER`` — tokenizing text that contains this string arms an ``os.abort()``
after the next generation's first piece; ``HYPURA_TEST_WORKER_SKIP_VALIDATION=1`` — load without
`validate_gguf`, so a hostile file reaches llama.cpp (to prove a real ``GGML_ASSERT`` abort is survived).
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

ABORT_MARKER_ENV = "HYPURA_TEST_WORKER_ABORT_MARKER"
SKIP_VALIDATION_ENV = "HYPURA_TEST_WORKER_SKIP_VALIDATION"
LIVE_EVERY_S = 0.5     # a dense streamer's stats() waits for its reads in flight: at most twice a second


def _plan_summary(runner: Any) -> dict | None:
    """The plan the runner follows, for the live page: its per-tensor map only for the tensors outside the layers
    (embedding, output; the layers' thousands are in its per-layer rows)."""
    plan = getattr(runner, "plan", None)
    if plan is None:
        return None
    out = plan.to_dict()
    out["tensors"] = {n: t for n, t in out["tensors"].items() if not n.startswith("blk.")}
    return out


def _error(exc: BaseException) -> tuple[str, str, str]:
    kind = "value" if isinstance(exc, (ValueError, LookupError)) else "os" if isinstance(exc, OSError) else "runtime"
    if "invalid grammar" in str(exc):   # llama.cpp refused a request's grammar: the caller's fault (400)
        kind = "value"
    return ("error", kind, str(exc) or type(exc).__name__)


class _Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.cancel = threading.Event()
        self.current: int | None = None
        self.runner: Any = None
        self.armed = False
        self.marker = os.environ.get(ABORT_MARKER_ENV) or None
        threading.Thread(target=self._read, name="hypura-worker-reader", daemon=True).start()

    def send(self, msg: tuple) -> None:
        with self.send_lock:
            self.conn.send(msg)

    def _read(self) -> None:
        """Route messages: cancels act at once, everything else queues for the main thread."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.inbox.put(("close",))    # the server went away: exit
                return
            if msg[0] == "cancel":
                if msg[1] == self.current:
                    self.cancel.set()
                    if self.runner is not None:
                        self.runner.abort()    # also inside a long decode (a prompt of thousands of tokens)
            else:
                self.inbox.put(msg)

    def run(self) -> int:
        msg = self.inbox.get()
        if msg[0] != "load":
            return 1
        try:
            runner = self._load(*msg[1:])
        except Exception as exc:  # noqa: BLE001 - reported to the server, which decides the status
            self.send(_error(exc))
            return 0
        self.runner = runner
        tmpl = runner.template
        self.send(("ready", {"n_ctx": runner.n_ctx, "n_batch": runner.ctx.n_batch, "load_ns": runner.load_ns,
                             "metadata": dict(runner.metadata), "mode": runner.mode, "stats": runner.stats(),
                             "plan": _plan_summary(runner),
                             "template": (tmpl.source, tmpl.bos_token, tmpl.eos_token)}))
        try:
            while (msg := self.inbox.get())[0] != "close":
                self._serve(runner, msg)
        finally:
            runner.close()
        return 0

    @staticmethod
    def _load(path: str, opts: Any, name: str) -> Any:
        if os.environ.get(SKIP_VALIDATION_ENV) == "1":
            import hypura_placement

            hypura_placement.validate_gguf = lambda *a, **k: None   # test hook: see the module docstring
        from hypura_engine import Runner

        return Runner(path, opts, name=name)

    def _serve(self, runner: Any, msg: tuple) -> None:
        op = msg[0]
        try:
            if op == "tokenize":
                if self.marker and self.marker in msg[1]:
                    self.armed = True
                self.send(("ok", runner.tokenize(msg[1], add_special=msg[2])))
            elif op == "embed":
                self.send(("ok", runner.embed(msg[1])))
            elif op == "generate":
                self._generate(runner, *msg[1:])
            else:
                self.send(("error", "runtime", f"unknown worker request {op!r}"))
        except Exception as exc:  # noqa: BLE001
            self.send(_error(exc))

    def _generate(self, runner: Any, rid: int, tokens: list[int], opts: Any) -> None:
        n_vocab = runner.model.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{n_vocab - 1})")
        self.cancel.clear()
        self.current = rid
        pieces, next_stats = 0, time.monotonic() + LIVE_EVERY_S
        try:
            with runner.lock:
                for item in runner.generate(tokens, opts, self.cancel):
                    if isinstance(item, str):
                        self.send(("piece", item))
                        pieces += 1
                        if time.monotonic() >= next_stats:
                            self.send(("stats", runner.stats(), pieces))
                            next_stats = time.monotonic() + LIVE_EVERY_S
                        if self.armed:
                            os.abort()
                    else:
                        self.send(("done", item, runner.stats()))
        finally:
            self.current = None


def main(argv: list[str]) -> int:
    # the parent owns this process's lifetime: a terminal's Ctrl-C is for `hypura serve` or `hypura run`
    # (which stop a generation or close their workers), not a signal that kills the model under them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    try:
        return _Worker(conn).run()
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

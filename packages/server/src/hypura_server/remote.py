"""`WorkerRunner`: the server's handle on a model running in a worker process (see `worker`).

It offers what the server uses of `hypura_engine.Runner` — ``tokenize``, ``generate`` (token by token),
``embed``, ``stats``, ``template``, ``n_ctx`` — over the worker's socket. If the worker dies (llama.cpp
aborted, the OOM killer, a signal), the call in flight raises `WorkerCrashed` naming the signal and
llama.cpp's last words (its ``GGML_ASSERT`` line), `alive` turns false and the model manager starts a
fresh worker for the next request; the server process and every other model are untouched.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

from hypura_engine import ChatTemplate, GenerateOptions, GenerationResult, LoadOptions

log = logging.getLogger("hypura.worker")
POLL_S = 0.05
CLOSE_WAIT_S = 5.0
DRAIN_WAIT_S = 30.0


def _seconds(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, default))
    except ValueError:
        return default
    return value if value > 0 and value == value else default


# every wait on a worker ends: a worker silent for this long (stopped, deadlocked, swapping) is killed and
# the request gets a 500; the next request starts a fresh worker. Loading a large model may take minutes.
REPLY_TIMEOUT_S = _seconds("HYPURA_WORKER_TIMEOUT_S", 600.0)
LOAD_TIMEOUT_S = _seconds("HYPURA_WORKER_LOAD_TIMEOUT_S", 1800.0)


class WorkerCrashed(RuntimeError):
    """The model's worker process died while serving a request."""


class WorkerError(RuntimeError):
    """The worker reported an error (a failed load, a llama.cpp error)."""


def _raise(kind: str, message: str) -> None:
    raise {"value": ValueError, "os": OSError}.get(kind, WorkerError)(message)


class WorkerRunner:
    """A model loaded in its own process. Use it as `Runner`: one request at a time (hold `lock`)."""
    _ids = itertools.count(1)

    def __init__(self, path: str | Path, opts: LoadOptions | None = None, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.opts = opts or LoadOptions()
        self.lock = threading.Lock()
        self._dead: str | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "hypura_server.worker", str(child.fileno())],
                                         pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True)
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self._drain = threading.Thread(target=self._read_stderr, name=f"hypura-worker-log-{self.proc.pid}",
                                       daemon=True)
        self._drain.start()
        try:
            self.conn.send(("load", str(self.path), self.opts, self.name))
            reply = self._recv("loading", LOAD_TIMEOUT_S)
            if reply[0] == "error":
                _raise(*reply[1:])
        except BaseException:
            self.close()
            raise
        info = reply[1]
        self.n_ctx: int = info["n_ctx"]
        self.n_batch: int = info["n_batch"]
        self.load_ns: int = info["load_ns"]
        self.metadata: dict[str, Any] = info["metadata"]
        self.mode: str = info["mode"]
        self._stats: dict[str, Any] = info["stats"]
        self.plan: dict[str, Any] | None = info.get("plan")   # the plan it follows, tensors left out
        self.live: dict[str, Any] = {"running": False}          # the generation now: see `generate`
        source, bos, eos = info["template"]
        self.template = ChatTemplate(source, bos, eos)

    # -- process plumbing -----------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self._dead is None and self.proc.poll() is None

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("[worker %d] %s", self.proc.pid, line)

    def _crash(self, doing: str) -> WorkerCrashed:
        try:
            code = self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._drain.join(1.0)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        last = [ln for ln in self._stderr if "GGML_ASSERT" in ln or "error" in ln.lower() or "abort" in ln.lower()]
        detail = f": {last[-1].strip()}" if last else ""
        self._dead = f"model runner for '{self.name}' crashed while {doing} ({how}){detail}"
        log.error("%s (pid %d)", self._dead, self.proc.pid)
        return WorkerCrashed(self._dead)

    def _recv(self, doing: str, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> tuple:
        """The worker's next message; WorkerCrashed if it died or sent nothing for `timeout` seconds
        (default `REPLY_TIMEOUT_S`; then it is killed, and the model manager replaces it). `on_wait` runs every
        poll while nothing has come (a cancel must reach the worker during a long prompt, before any piece)."""
        deadline = time.monotonic() + (REPLY_TIMEOUT_S if timeout is None else timeout)
        while True:
            try:
                if self.conn.poll(POLL_S):
                    return self.conn.recv()
            except (EOFError, OSError):
                raise self._crash(doing) from None
            if on_wait is not None:
                on_wait()
            if self.proc.poll() is not None:
                raise self._crash(doing)
            if time.monotonic() > deadline:
                self.kill()
                self._dead = (f"model runner for '{self.name}' did not answer within "
                              f"{REPLY_TIMEOUT_S if timeout is None else timeout:g} s while {doing}: stopped it")
                log.error("%s (pid %d)", self._dead, self.proc.pid)
                raise WorkerCrashed(self._dead)

    def _call(self, doing: str, *msg: Any) -> Any:
        if self._dead:
            raise WorkerCrashed(self._dead)
        try:
            self.conn.send(msg)
        except OSError:
            raise self._crash(doing) from None
        reply = self._recv(doing)
        if reply[0] == "error":
            _raise(*reply[1:])
        return reply[1]

    # -- the Runner interface the server uses ----------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self._call("tokenizing", "tokenize", text, add_special)

    def embed(self, text: str) -> list[float]:
        return self._call("embedding", "embed", text)

    def stats(self) -> dict[str, Any]:
        """The statistics as of the last finished generation (never blocks on a running one); once one has
        finished, also its ``last_eval_tps``, ``last_prompt_tps``, ``last_eval_count`` and ``last_done_reason``
        (``aborted``: cancelled, e.g. its client left)."""
        return dict(self._stats)

    def generate(self, prompt: list[int], opts: GenerateOptions | None = None,
                 cancel: threading.Event | None = None) -> Iterator[str | GenerationResult]:
        """Yield text pieces as the worker produces them, then one GenerationResult. Caller holds `lock`."""
        if self._dead:
            raise WorkerCrashed(self._dead)
        rid = next(self._ids)
        try:
            self.conn.send(("generate", rid, list(prompt), opts or GenerateOptions()))
        except OSError:
            raise self._crash("generating") from None
        finished, cancelled = False, False
        # for the live page: pieces so far, when the first came, and the worker's latest statistics
        live = self.live = {"running": True, "started": time.time(), "pieces": 0, "first_piece": None,
                            "stats": dict(self._stats)}

        def check_cancel() -> None:
            nonlocal cancelled
            if cancel is not None and cancel.is_set() and not cancelled:
                self._send_cancel(rid)
                cancelled = True
        try:
            while True:
                check_cancel()
                msg = self._recv("generating", on_wait=check_cancel)
                if msg[0] == "piece":
                    live["pieces"] += 1
                    live["first_piece"] = live["first_piece"] or time.time()
                    live["last_piece"] = time.time()
                    yield msg[1]
                elif msg[0] == "stats":   # disk bytes per wall second between two reports: the read rate now
                    now, read = time.time(), msg[1].get("bytes_from_disk", 0)
                    if "stats_at" in live and now > live["stats_at"]:
                        live["disk_bps_now"] = (read - live["stats"].get("bytes_from_disk", 0)) / (now - live["stats_at"])
                    live["stats"], live["stats_at"] = msg[1], now
                elif msg[0] == "done":
                    finished = True
                    self._done(msg)
                    yield msg[1]
                    return
                else:
                    finished = True
                    _raise(*msg[1:])
        finally:
            live["running"], live["stats"] = False, dict(self._stats)
            if not finished and self.alive:
                self._abandon(rid)

    def _done(self, msg: tuple) -> None:
        """A generation's end: the worker's statistics and how the generation went, for /api/ps."""
        result = msg[1]
        self._stats = {**msg[2], "last_eval_tps": round(result.eval_tps, 3),
                       "last_prompt_tps": round(result.prompt_tps, 3), "last_eval_count": result.eval_tokens,
                       "last_done_reason": result.done_reason}

    def _send_cancel(self, rid: int) -> None:
        try:
            self.conn.send(("cancel", rid))
        except OSError:
            pass

    def _abandon(self, rid: int) -> None:
        """The caller stopped reading mid-generation: cancel it and read up to its end, so the next request
        starts in step; a worker that does not finish in time is killed (the next request restarts it)."""
        self._send_cancel(rid)
        deadline = time.monotonic() + DRAIN_WAIT_S
        try:
            while time.monotonic() < deadline:
                msg = self.conn.recv() if self.conn.poll(POLL_S) else ("",)
                if msg[0] == "done":
                    self._done(msg)
                if msg[0] in ("done", "error"):
                    return
                if self.proc.poll() is not None:
                    break
        except (EOFError, OSError):
            pass
        self._dead = f"model runner for '{self.name}' did not stop after a cancelled request"
        self.proc.kill()

    def kill(self) -> None:
        """Stop the worker at once (SIGKILL works on a stopped process too) and reap it."""
        self._dead = self._dead or f"model runner for '{self.name}' was stopped"
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        """Stop the worker (politely, then by force) and reap it; safe to call more than once."""
        if self.proc.poll() is None:
            try:
                self.conn.send(("close",))
            except OSError:
                pass
            try:
                self.proc.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dead = self._dead or "closed"
        self.conn.close()
        self._drain.join(1.0)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

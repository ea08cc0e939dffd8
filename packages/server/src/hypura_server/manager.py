"""Loaded models: on-demand loading, keep-alive expiry, and fair FIFO queueing per model.

A request takes a `Lease` on a model: it waits its turn in that model's FIFO queue (giving up when
its cancel event is set — the client went away), the model is loaded or reloaded (another context
size) if needed, and on release the model stays loaded for the request's ``keep_alive`` (0 unloads
at once, unless someone is waiting). A reaper thread unloads expired idle models.

Each model runs in its own worker process (`remote.WorkerRunner`): a worker that died (llama.cpp
aborted) is noticed at release or at the next lease, reaped, and replaced by a fresh one on demand.
"""
from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from hypura_engine import LoadOptions, ModelEntry

from .durations import FOREVER
from .remote import WorkerRunner

Runner = WorkerRunner   # what a Slot holds: the engine's Runner interface, in a worker process


class Cancelled(Exception):
    """The request was cancelled (client disconnected) while waiting for its model."""


class FairLock:
    """A mutex that serves waiters strictly in arrival order; a waiter may give up on `cancel`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self, cancel: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Wait in arrival order; False if `cancel` was set or `timeout` seconds passed first."""
        ticket = object()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._held or self._queue[0] is not ticket:
                    if cancel is not None and cancel.is_set():
                        return False
                    if deadline is not None and time.monotonic() >= deadline:
                        return False
                    self._cond.wait(0.05 if cancel is not None or deadline is not None else None)
                self._held = True
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def try_acquire(self) -> bool:
        with self._cond:
            if self._held or self._queue:
                return False
            self._held = True
            return True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._queue)


@dataclass(eq=False)
class Slot:
    """One model name's queue and, while loaded, its Runner."""
    entry: ModelEntry
    lock: FairLock = field(default_factory=FairLock)
    runner: Runner | None = None
    ctx: int = 0                     # context size asked for at load (before the model's own clamp)
    expires_at: float = FOREVER      # time.time() when it unloads; inf = never
    last_used: float = 0.0
    unload_pending: bool = False     # unload asked while a request held it: unload at its release


class Lease:
    """A request's exclusive use of a loaded model; `release` exactly once (extra calls are ignored).
    A context manager: ``with manager.lease(...) as lease:`` gives the model back however the block ends."""

    def __init__(self, manager: ModelManager, slot: Slot, load_ns: int) -> None:
        self.manager = manager
        self.slot = slot
        self.runner: Runner = slot.runner  # type: ignore[assignment]
        self.load_ns = load_ns
        self.keep_alive: float | None = None   # what leaving a ``with`` block releases with
        self._released = False

    def release(self, keep_alive: float | None = None) -> None:
        if not self._released:
            self._released = True
            self.manager._release(self.slot, keep_alive)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release(self.keep_alive)


class ModelManager:
    """Loads Runners on demand (at most `max_loaded` at once) and unloads them after keep-alive."""

    def __init__(self, load: LoadOptions, keep_alive: float = 300.0, max_loaded: int = 1,
                 context_limit: Callable[[ModelEntry], int | None] | None = None,
                 runner_factory: Callable[..., WorkerRunner] = WorkerRunner,
                 draft_for: Callable[[ModelEntry], str | None] | None = None) -> None:
        self.load = load
        self._draft_for = draft_for or (lambda entry: None)   # speculative decoding per model (drafts.py)
        self._open = runner_factory
        self.keep_alive = keep_alive
        self.max_loaded = max(1, max_loaded)
        self._context_limit = context_limit or (lambda entry: None)
        self._slots: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._reaper = threading.Thread(target=self._reap, name="hypura-keepalive", daemon=True)
        self._reaper.start()

    # -- leases ---------------------------------------------------------------------------
    def context_size(self, entry: ModelEntry, num_ctx: int | None) -> int:
        """The context a request gets: ``num_ctx`` (or the server default), clamped to the model's maximum."""
        ctx = self.load.ctx if num_ctx is None else int(num_ctx)
        if ctx < 1:
            raise ValueError("num_ctx must be positive")
        limit = self._context_limit(entry)
        return min(ctx, limit) if limit else ctx

    def lease(self, entry: ModelEntry, num_ctx: int | None = None,
              cancel: threading.Event | None = None) -> Lease:
        """Wait (FIFO) for `entry`'s model, loading it if needed. Raises Cancelled, or the load's error."""
        ctx = self.context_size(entry, num_ctx)
        if not stat.S_ISREG(os.stat(entry.path).st_mode):   # a FIFO would block the worker's reader forever
            raise ValueError(f"model '{entry.name}' is not a regular file")
        with self._lock:
            slot = self._slots.get(entry.name)
            if slot is None or slot.entry.path != entry.path:
                slot = self._slots.setdefault(entry.name, Slot(entry))
        if not slot.lock.acquire(cancel):
            raise Cancelled()
        try:
            load_ns = 0
            if slot.runner is not None and (slot.ctx != ctx or slot.entry.path != entry.path
                                            or not slot.runner.alive):
                self._close(slot)    # another context or file, or its worker died: start afresh
            if slot.runner is None:
                self._make_room(slot, cancel)
                slot.entry = entry
                t0 = time.perf_counter_ns()   # the whole load as the client waits: worker start included
                opts = replace(self.load, ctx=ctx, draft=self._draft_for(entry) or self.load.draft)
                runner = self._open(entry.path, opts, name=entry.name)
                slot.runner, slot.ctx = runner, ctx
                load_ns = max(runner.load_ns, time.perf_counter_ns() - t0)
            slot.runner.lock.acquire()
        except BaseException:
            slot.lock.release()
            raise
        slot.expires_at = FOREVER
        return Lease(self, slot, load_ns)

    def _release(self, slot: Slot, keep_alive: float | None) -> None:
        keep = self.keep_alive if keep_alive is None else keep_alive
        if math.isnan(keep):
            keep = self.keep_alive   # never reaches here from a request (parse_keep_alive refuses it)
        try:
            if slot.runner is not None:
                slot.runner.lock.release()
            slot.last_used = time.time()
            slot.expires_at = slot.last_used + keep if keep != FOREVER else FOREVER
            if (keep <= 0 and slot.lock.waiting == 0 or slot.unload_pending
                    or slot.runner is not None and not slot.runner.alive):
                slot.unload_pending = False
                self._close(slot)
        finally:
            slot.lock.release()
        with self._wake:
            self._wake.notify_all()

    def _make_room(self, slot: Slot, cancel: threading.Event | None) -> None:
        """Unload idle models (least recently used first) until one more fits under `max_loaded`."""
        while True:
            with self._lock:
                loaded = [s for s in self._slots.values() if s.runner is not None and s is not slot]
            if len(loaded) < self.max_loaded:
                return
            for other in sorted(loaded, key=lambda s: s.last_used):
                if other.lock.try_acquire():
                    try:
                        self._close(other)
                    finally:
                        other.lock.release()
                    break
            else:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                time.sleep(0.05)

    # -- unloading ------------------------------------------------------------------------
    @staticmethod
    def _close(slot: Slot) -> None:
        runner, slot.runner, slot.ctx = slot.runner, None, 0
        if runner is not None:
            runner.close()

    def unload(self, name: str, wait: float | bool = 30.0) -> bool:
        """Unload model `name` after the requests queued for it, waiting at most `wait` seconds (True:
        forever, False: not at all). If they are not done by then the model unloads when the running one
        gives it back, and this returns at once (never blocks forever). True if it was unloaded now."""
        with self._lock:
            slot = self._slots.get(name)
        if slot is None or slot.runner is None:
            return False
        timeout = None if wait is True else 0.0 if wait is False else float(wait)
        if timeout == 0.0 and not slot.lock.try_acquire() or timeout != 0.0 and not slot.lock.acquire(
                None, timeout):
            slot.unload_pending = True
            return False
        try:
            was = slot.runner is not None
            self._close(slot)
            return was
        finally:
            slot.lock.release()

    def loaded(self) -> list[Slot]:
        """Loaded models, most recently used first (the slots are live objects: read, don't modify)."""
        with self._lock:
            slots = [s for s in self._slots.values() if s.runner is not None]
        return sorted(slots, key=lambda s: -s.last_used)

    def _reap(self) -> None:
        with self._wake:
            while not self._closed:
                now = time.time()
                due = [s for s in self._slots.values() if s.runner is not None and s.expires_at <= now]
                nxt = min((s.expires_at for s in self._slots.values() if s.runner is not None),
                          default=FOREVER)
                self._wake.release()
                try:
                    for slot in due:
                        if slot.lock.try_acquire():
                            try:
                                if slot.expires_at <= time.time():
                                    self._close(slot)
                            finally:
                                slot.lock.release()
                finally:
                    self._wake.acquire()
                wait = nxt - time.time()
                if due or not math.isfinite(wait):   # inf: nothing expires; NaN never gets here
                    wait = 0.1 if due else 60.0
                self._wake.wait(min(max(wait, 0.01), 60.0))

    def close(self, wait_s: float = 10.0) -> None:
        """Unload everything: waits up to `wait_s` for running requests, then stops their workers anyway."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        deadline = time.monotonic() + wait_s
        for slot in list(self._slots.values()):
            if not self.unload(slot.entry.name, max(deadline - time.monotonic(), 0.0)):
                runner = slot.runner
                if runner is not None:
                    runner.kill()

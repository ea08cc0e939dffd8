"""Loaded models: on-demand loading, keep-alive expiry, and fair FIFO queueing per model.

A request takes a `Lease` on a model: it waits its turn in that model's FIFO queue (giving up when
its cancel event is set — the client went away), the model is loaded or reloaded (another context
size) if needed, and on release the model stays loaded for the request's ``keep_alive`` (0 unloads
at once, unless someone is waiting). A reaper thread unloads expired idle models.

Each model runs in its own worker process (`remote.WorkerRunner`): a worker that died (llama.cpp
aborted) is noticed at release or at the next lease, reaped, and replaced by a fresh one on demand.
"""
from __future__ import annotations

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

    def acquire(self, cancel: threading.Event | None = None) -> bool:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._held or self._queue[0] is not ticket:
                    if cancel is not None and cancel.is_set():
                        return False
                    self._cond.wait(0.05 if cancel is not None else None)
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


class Lease:
    """A request's exclusive use of a loaded model; `release` exactly once (extra calls are ignored)."""

    def __init__(self, manager: ModelManager, slot: Slot, load_ns: int) -> None:
        self.manager = manager
        self.slot = slot
        self.runner: Runner = slot.runner  # type: ignore[assignment]
        self.load_ns = load_ns
        self._released = False

    def release(self, keep_alive: float | None = None) -> None:
        if not self._released:
            self._released = True
            self.manager._release(self.slot, keep_alive)


class ModelManager:
    """Loads Runners on demand (at most `max_loaded` at once) and unloads them after keep-alive."""

    def __init__(self, load: LoadOptions, keep_alive: float = 300.0, max_loaded: int = 1,
                 context_limit: Callable[[ModelEntry], int | None] | None = None,
                 runner_factory: Callable[..., WorkerRunner] = WorkerRunner) -> None:
        self.load = load
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
                runner = self._open(entry.path, replace(self.load, ctx=ctx), name=entry.name)
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
        if slot.runner is not None:
            slot.runner.lock.release()
        slot.last_used = time.time()
        slot.expires_at = slot.last_used + keep if keep != FOREVER else FOREVER
        if keep <= 0 and slot.lock.waiting == 0 or slot.runner is not None and not slot.runner.alive:
            self._close(slot)
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

    def unload(self, name: str, wait: bool = True) -> bool:
        """Unload model `name` (after the requests queued for it). True if it was loaded."""
        with self._lock:
            slot = self._slots.get(name)
        if slot is None or slot.runner is None:
            return False
        if wait:
            slot.lock.acquire()
        elif not slot.lock.try_acquire():
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
                if not due:
                    self._wake.wait(min(max(nxt - time.time(), 0.01), 60.0))
                else:
                    self._wake.wait(0.1)

    def close(self) -> None:
        """Unload everything (waits for running requests)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        for slot in list(self._slots.values()):
            self.unload(slot.entry.name)

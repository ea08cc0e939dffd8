"""Reading experts into the cache: in place or through staging, then waiting, uploading, giving back.

A read of one expert of one kind goes straight into its host slot where the layout allows it (whole
pages; see layout.py), else into a staging buffer: copied into the host slot, or returned as pending
uploads for the decode thread (device caches: only that thread talks to the GPU); an expert the CPU keeps
repacked is read already converted from the repacked file straight into its slot where there is one
(repacked_file.py), else converted from staging into its slot by the reading thread (memory.py). With a RAM-cache slot
the bytes are kept there too. Every staging buffer goes back to the pool exactly once, whether the read
succeeds, fails, or is abandoned (a speculative read the router did not ask for).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, as_completed

from ..cache import ExpertCache
from ..directio import ALIGN, DirectReader, align_down, align_up, aligned_span
from .layout import ExpertLayout
from .memory import ExpertMemory, memmove

SPECULATIVE_PIECE = 4 << 20   # speculative reads go in pieces this size: a wrong guess stops within one


class Abandoned(Exception):
    """A speculative read stopped because the router chose other experts."""


class ExpertReads:
    """Reads of `layout`'s experts from `reader` into `memory`; `cache` / `ram_cache` forget the slots of
    failed reads."""

    def __init__(self, layout: ExpertLayout, memory: ExpertMemory, reader: DirectReader, cache: ExpertCache,
                 ram_cache: ExpertCache | None) -> None:
        self.layout = layout
        self.memory = memory
        self.reader = reader
        self.cache = cache
        self.ram_cache = ram_cache
        self.repacked = None      # a RepackedFile: repacked experts read from it straight into their slots
        self.converted = 0        # reads converted as they landed (repacked, not from that file)

    def submit(self, layer: int, kind: str, expert: int, slot: int | None, ram_slot: int | None = None) -> Future:
        """`read` on the reader's threads."""
        return self.reader.pool.submit(self.read, layer, kind, expert, slot, ram_slot)

    def read(self, layer: int, kind: str, expert: int, slot: int | None, ram_slot: int | None = None,
             cancel: threading.Event | None = None):
        """Read one expert of one kind into its cache slot (host), or into pinned staging and return the
        pending uploads (device: the decode thread uploads, then gives the staging back). With `ram_slot`
        the bytes are also kept in that RAM-cache slot; `slot` None: only there. With `cancel` (a
        speculative read): in SPECULATIVE_PIECE pieces, raising Abandoned once it is set."""
        mem = self.memory
        slot_bytes = self.layout.kinds[kind].slot
        host = mem.device is None
        key = (layer, kind)
        if self.repacked is not None and slot is not None and ram_slot is None and key in self.repacked.blocks:
            if cancel is not None and cancel.is_set():
                raise Abandoned()
            offset, length = self.repacked.where(key, expert)
            self.reader.read_into(mem.region_view(mem.region_offset(mem.slot_ptr(layer, kind, slot)), length), offset)
            return None
        if key in self.layout.repacked:
            self.converted += 1
        pos = at = 0
        uploads = []
        in_place = self.layout.in_place[(layer, kind)]
        stage = mem.staging.take()
        try:
            for p, (offset, nb) in enumerate(self.layout.parts[(layer, kind)]):
                if slot is not None and in_place[p]:
                    dst = mem.slot_ptr(layer, kind, slot) + pos
                    self._read_in_place(dst, offset + expert * nb, nb, stage, cancel)
                    if ram_slot is not None:
                        memmove(mem.ram_ptr(ram_slot, kind) + pos, dst, nb)
                    pos += nb
                    continue
                start, length = aligned_span(offset + expert * nb, nb)
                piece = length if cancel is None else SPECULATIVE_PIECE
                for c in range(0, length, piece):
                    if cancel is not None and cancel.is_set():
                        raise Abandoned()
                    self.reader.read_into(stage.view[at + c:at + min(length, c + piece)], start + c)
                src = stage.ptr + at + (offset + expert * nb - start)
                at += length
                if ram_slot is not None:
                    memmove(mem.ram_ptr(ram_slot, kind) + pos, src, nb)
                if slot is not None and host:
                    mem.put(layer, kind, slot, pos, src, nb)
                elif slot is not None:
                    uploads.append((src, slot * slot_bytes + pos, nb))
                pos += nb
        except BaseException:
            mem.staging.give_back(stage)
            raise
        if host or slot is None:
            mem.staging.give_back(stage)
            return None
        return (layer, kind), stage, uploads

    def _read_in_place(self, dst, src: int, nb: int, stage, cancel: threading.Event | None) -> None:
        """Read the `nb` file bytes at `src` to host address `dst` (congruent to `src` modulo a page): the
        whole pages directly, the partial first and last pages through `stage` (they share a page with a
        neighbouring slot)."""
        a, b = align_up(src), align_down(src + nb)
        at = self.memory.region_offset(dst)
        piece = SPECULATIVE_PIECE if cancel is not None else max(b - a, ALIGN)
        for c in range(a, b, piece):
            if cancel is not None and cancel.is_set():
                raise Abandoned()
            self.reader.read_into(self.memory.region_view(at + (c - src), min(piece, b - c)), c)
        if a > src:
            self.reader.read_into(stage.view[:ALIGN], a - ALIGN)
            memmove(dst, stage.ptr + (src - (a - ALIGN)), a - src)
        if src + nb > b:
            self.reader.read_into(stage.view[ALIGN:2 * ALIGN], b)
            memmove(dst + (b - src), stage.ptr + ALIGN, src + nb - b)

    # -- waiting ----------------------------------------------------------------------------
    def finish(self, futs: list) -> None:
        """Wait for expert reads; upload what landed in pinned staging (device) and give the staging back.
        On an error, let every read finish and give its staging back exactly once, then raise the first."""
        done = set()
        try:
            for f in as_completed(futs):
                done.add(f)
                pending = f.result()          # a failed read gave its own staging back
                if pending is not None:
                    self.upload(pending)
        except BaseException:
            self.drain(f for f in futs if f not in done)
            raise

    def await_fill(self, futs: list, slots: list[int], ram_slots: list) -> None:
        """Wait for the reads that fill `slots` (and RAM-tier `ram_slots`); if one fails, those slots hold
        nothing usable: forget them, then raise."""
        try:
            self.finish(futs)
        except BaseException:
            self.forget(slots, ram_slots)
            raise

    def forget(self, slots: list[int], ram_slots: list) -> None:
        self.cache.invalidate(slots)
        if self.ram_cache is not None:
            self.ram_cache.invalidate([s for s in ram_slots if s is not None])

    def upload(self, pending) -> None:
        """Upload what a device read left in pinned staging, then give the staging back."""
        key, stage, uploads = pending
        try:
            for src, dst_offset, nb in uploads:
                self.memory.upload(key, src, dst_offset, nb)
            if uploads:
                self.memory.zero_tail(*key, uploads[0][1] // self.layout.kinds[key[1]].slot)
        finally:
            self.memory.staging.give_back(stage)

    def drain(self, futs) -> None:
        """Let reads finish and give back the staging of those nobody will upload."""
        for f in futs:
            try:
                pending = f.result()
                if pending is not None:
                    self.memory.staging.give_back(pending[1])
            except BaseException:  # noqa: BLE001 - the caller raises the error that matters
                pass

"""Dense-FFN streaming: FFN weights of some layers live in a small slot pool and are read from
the GGUF file (direct I/O) just ahead of the layer that uses them.

Timing (see DESIGN.md "Hook points"): the eval filter splits the graph at `ffn_norm-N` of every
streamed layer N. In that split's ask=false call — everything before it has been computed and
nothing after it has been launched — the streamer waits for layer N's reads (issuing them if
needed), marks N's slot busy, and issues reads for the next streamed layers whose slots are free.
A slot is never overwritten while its layer may still compute (only the current layer's slot is
busy, and a slot whose layer was prefetched but not yet used is never taken), and never used
before its reads completed.

On the CPU, streamed tensors that llama.cpp's default load repacks (`repack.py`) compute from storage
of that buffer type, as in `--mode resident`: the slot pool's memory is a buffer of that type (wrapped
as a plain CPU buffer too, for the tensors that do not repack); a fill's reads land in the slot, and the
completion of its last read (on a reader thread, off the decode thread) converts those tensors in place
(`InPlaceRepack`: `ggml_backend_tensor_set` part by part); the fill's futures include that conversion,
so a layer is never used before it finished, and the pool needs no more memory than before. Tensors of
a further extra buffer type (none on common builds) get storage of their own beside the slot
(`RepackSlots`), converted from the slot's bytes the same way.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from pathlib import Path

from hypura_llama import SPLIT, LlamaModel, ModelParams, ffi, lib

from .base import Streamer
from .directio import StreamError
from .directio import align_up
from .loader import AlignedBuffer, OwnedLoad, model_files
from .pool import DeviceSlotPool, HostSlotPool, LayerLayout, PinnedWindow, RepackSlots
from .repack import by_buffer_type
from .repacked_file import open_dense_file
from .spec import DENSE_FFN, StreamSpec

log = logging.getLogger(__name__)
LAYER_END = "l_out-"   # a layer's output (llama.cpp's name for it in the decoder graphs)


class DenseStreamer(Streamer):
    """Streams the dense FFN tensors of `spec.layers` through `spec.n_slots` slots."""

    def __init__(self, spec: StreamSpec, device=None, io_threads: int = 16, direct_io: bool = True,
                 trigger: str = "ffn_norm-", repack: bool = True, eval_filter=None, repacked_dir=None) -> None:
        """`device`: a GPU `hypura_llama.Device` to keep the slots in its memory (None: host RAM,
        the CPU backend). `trigger` is the node before which a layer's weights must be resident, and
        `repack=False` loads every weight in plain storage (llama.cpp's default load would not):
        only negative controls in the tests change them. `spec.ram_layers` are read from disk once into
        a RAM copy (pinned with a GPU) and filled from there, never re-read. `repacked_dir`: where layers
        whose tensors the CPU repacks are stored converted once (repacked_file.py; None: converted as read)."""
        super().__init__(spec, device, io_threads, direct_io, eval_filter)
        self.repack = repack and device is None
        self.repacked_dir = repacked_dir
        self.repacked_file = None
        self.repacked_file_reason = ""
        self.repack_slots: list[RepackSlots] = []
        self._convert: list[list[tuple[RepackSlots, object, int]]] = []   # per layer: (storage, tensor, raw offset)
        self.ram_layers = set(spec.ram_layers)
        self._ram_copy: AlignedBuffer | PinnedWindow | None = None
        self._ram_off: dict[int, int] = {}
        self.n_slots = spec.n_slots
        self.pool: HostSlotPool | DeviceSlotPool | None = None
        self._layer_tensors: list[list[tuple[object, int]]] = []
        self.layouts: list[LayerLayout] = []
        self._add_rule(trigger, "", SPLIT, layers=self.layers)
        # after a streamed layer that resident compute follows (the next layer's FFN or the output head): its slot
        # is free for a read while that compute runs
        before_gap = [layer for layer in self.layers if layer + 1 not in self._pos]
        self._end_rule = self._add_rule(LAYER_END, "", SPLIT, layers=before_gap) if self.n_slots > 1 else -1
        # slot state
        self._owner = [-1] * self.n_slots             # streamed index loaded / loading in each slot
        self._futures: list[list[Future]] = [[] for _ in range(self.n_slots)]
        self._uploaded = [True] * self.n_slots
        self._pending: set[int] = set()               # prefetched, not yet used in this pass
        self._busy = -1                               # slot of the layer computing now
        self.fills = 0
        self.prefetch_hits = 0

    # -- loading --------------------------------------------------------------------------
    def load_model(self, params: ModelParams | None = None) -> LlamaModel:
        params = params or self.model_params()
        owned = self._owned_load(repack=None if self.repack else False)
        try:
            model = owned.load(params)
        finally:
            owned.close()
        return self.attach(owned, model)

    def attach(self, owned: OwnedLoad, model: LlamaModel) -> LlamaModel:
        """Take over the streamed dense FFN tensors of `model`, just loaded by `owned`: lay them out, allocate
        the slot pool and re-point them into it (on an error the model is closed)."""
        by_layer: dict[int, list] = {layer: [] for layer in self.layers}
        mine = [name for name in owned.streamed if DENSE_FFN.match(name)]
        for name in mine:
            by_layer[int(DENSE_FFN.match(name).group(1))].append(owned.index.tensors[name])
        missing = [layer for layer, ts in by_layer.items() if not ts]
        if missing:
            model.close()
            raise ValueError(f"{self.path}: no dense FFN tensors in layers {missing} (is this a MoE model?)")
        self.layouts = [LayerLayout.build(layer, by_layer[layer]) for layer in self.layers]
        slot_size = max(lay.size for lay in self.layouts)
        groups = by_buffer_type({n: b for n in mine if (b := owned.repack_buffer_type(n)) is not None})
        # the buffer type most streamed bytes repack into: the slots' own memory, converted in place
        main = max(groups.values(), key=lambda g: sum(owned.index.tensors[n].size for n in g[1]), default=None)
        in_place = set(main[1]) if main else set()
        self.pool = (HostSlotPool(self.n_slots, slot_size, repack_type=main[0] if main else None)
                     if self.device is None
                     else DeviceSlotPool(self.device, self.n_slots, slot_size,
                                         staging=any(layer not in self.ram_layers for layer in self.layers)))
        repacked = self._repack_storage(owned, [g for g in groups.values() if g is not main])
        for k, lay in enumerate(self.layouts):
            tensors, convert = [], []
            for name, off in lay.tensor_slot_offset.items():
                t = owned.streamed[name]
                if name in repacked:
                    storage, at = repacked[name][k]
                    storage.repoint(t, k % self.n_slots, at)
                    convert.append((storage, t, off))
                else:
                    self.pool.repoint(t, k % self.n_slots, off, repacked=name in in_place)
                    if name in in_place:
                        convert.append((None, t, off))
                tensors.append((t, off))
            self._layer_tensors.append(tensors)
            self._convert.append(convert)
        if main and self.repacked_dir is not None and self.device is None and not self.repack_slots:
            converted = [k for k, conv in enumerate(self._convert) if conv and self.layers[k] not in self.ram_layers]
            self.repacked_file, self.repacked_file_reason = open_dense_file(
                Path(self.repacked_dir), model_files(self.path), self, converted, main[0].name)
            self.pool.repacker.converted_bytes = 0   # (building converted them all)
            if self.repacked_file is None:
                log.warning("repacked layers: %s; converting them as they are read", self.repacked_file_reason)
        self._load_ram_tier()
        self._loaded()
        log.info("dense streaming: %d layers through %d slots of %.1f MiB (+%.1f MiB repacked storage)",
                 len(self.layers), self.n_slots, self.pool.slot_size / 2**20,
                 sum(r.nbytes for r in self.repack_slots) / 2**20)
        return model

    def _repack_storage(self, owned: OwnedLoad, groups) -> dict[str, dict[int, tuple[RepackSlots, int]]]:
        """Per-slot storage for the tensors of each further buffer type (`groups`: (type, names)) that streamed
        tensors repack into, sized for the largest layer; {name: {streamed index: (storage, offset)}}."""
        out: dict[str, dict[int, tuple[RepackSlots, int]]] = {}
        for buft, names in groups:
            align = max(64, int(buft.alignment))
            wanted = set(names)
            offsets: list[dict[str, int]] = []
            largest = 1
            for lay in self.layouts:
                pos, at = 0, {}
                for t in lay.tensors:
                    if t.name in wanted:
                        at[t.name] = pos
                        pos += align_up(t.size, align)
                offsets.append(at)
                largest = max(largest, pos)
            slots = RepackSlots(buft, self.n_slots, largest)
            self.repack_slots.append(slots)
            for k, at in enumerate(offsets):
                for name, off in at.items():
                    out.setdefault(name, {})[k] = (slots, off)
        return out

    def fill_now(self, k: int) -> memoryview:
        """Read streamed layer k from the model into its slot and convert it, now (building the repacked
        file); its slot's image."""
        s = k % self.n_slots
        view = self.pool.slot_view(s)
        for span in self.layouts[k].spans:
            for f in self.reader.submit(view[span.slot_offset:span.slot_offset + span.length], span.file_offset):
                f.result()
        self._converter(k, s)()
        return view

    def _load_ram_tier(self) -> None:
        ram = [k for k, layer in enumerate(self.layers) if layer in self.ram_layers]
        if not ram:
            return
        total = sum(self.layouts[k].size for k in ram)
        if self.device is not None:
            self._ram_copy = PinnedWindow(self.device.host_buffer_type, total)
            view, addr = self._ram_copy.view, self._ram_copy.addr
        else:
            self._ram_copy = AlignedBuffer(total)
            view, addr = self._ram_copy.view, int(ffi.cast("uintptr_t", self._ram_copy.ptr))
        pos = 0
        futs = []
        for k in ram:
            lay = self.layouts[k]
            self._ram_off[k] = addr + pos
            for span in lay.spans:
                futs.extend(self.reader.submit(view[pos + span.slot_offset:pos + span.slot_offset + span.length],
                                               span.file_offset))
            pos += lay.size
        for f in futs:
            f.result()

    # -- the eval callback ----------------------------------------------------------------
    def _issue(self, k: int) -> None:
        s = k % self.n_slots
        for f in self._futures[s]:
            f.result()  # never two fills of one slot at once
        from_file = self.repacked_file is not None and k in self.repacked_file.blocks
        if k in self._ram_off:  # RAM tier: no disk read
            src = self._ram_off[k]
            if self.device is None:
                dst = int(ffi.cast("uintptr_t", self.pool.mem.ptr)) + s * self.pool.slot_size
                futs = [self.reader.pool.submit(ctypes.memmove, dst, src, self.layouts[k].size)]
            else:
                futs = []
        elif from_file:   # converted already
            offset, length = self.repacked_file.where(k, 0)
            futs = self.reader.submit(self.pool.slot_view(s)[:length], offset)
        else:
            lay = self.layouts[k]
            view = self.pool.slot_view(s)
            futs = []
            for span in lay.spans:
                futs.extend(self.reader.submit(view[span.slot_offset:span.slot_offset + span.length],
                                               span.file_offset))
        if self._convert[k] and not from_file:
            futs = [*futs, _after(list(futs), self._converter(k, s))]
        self._owner[s] = k
        self._futures[s] = futs
        self._uploaded[s] = self.device is None
        self.fills += 1

    def _converter(self, k: int, s: int):
        """Convert layer k's repacked tensors from slot s's raw bytes into their storage."""
        base = int(ffi.cast("uintptr_t", self.pool.mem.ptr)) + s * self.pool.slot_size

        def convert() -> None:
            for storage, t, off in self._convert[k]:
                if storage is None:
                    self.pool.repacker.convert(t)   # read in place
                else:
                    storage.fill(t, base + off)
        return convert

    def _upload_ready(self) -> None:
        """Start uploads (device pools) of slots whose reads have all completed."""
        for s in range(self.n_slots):
            if not self._uploaded[s] and all(f.done() for f in self._futures[s]):
                for f in self._futures[s]:
                    f.result()
                self.pool.upload(s, self._layer_tensors[self._owner[s]], self._ram_off.get(self._owner[s]))
                self._uploaded[s] = True

    def _on_node(self, tensor, ask: bool, rule: int, layer: int) -> None:
        if rule == self._end_rule:
            self._layer_done(self._pos[layer])
            return
        self._start_layer(layer)
        k = self._pos[layer]
        s = k % self.n_slots
        self._busy = -1
        if self._owner[s] != k:
            self._pending.discard(self._owner[s])
            self._issue(k)
        else:
            self.prefetch_hits += 1
        self._pending.discard(k)
        self._busy = s
        self._prefetch(k)  # before waiting: the disk queue never drains while this layer's reads finish
        t0 = time.perf_counter()
        try:
            for f in self._futures[s]:
                f.result()
            if not self._uploaded[s]:
                self.pool.upload(s, self._layer_tensors[k], self._ram_off.get(k))
                self._uploaded[s] = True
            self.pool.wait(s)
        except StreamError:
            self._owner[s] = -1
            raise
        self.stall_s += time.perf_counter() - t0
        self._upload_ready()

    def _layer_done(self, k: int) -> None:
        """Streamed layer k has computed (its `LAYER_END` node) and resident compute follows: no slot is busy, so
        k's own slot takes the next layer that needs one while the resident layers (or the output head and the next
        pass's first resident layers) compute. (Waiting for the next streamed layer's trigger would leave the disk
        idle then; and at the end of a pass, with `n_streamed mod n_slots` ≠ 0, k's slot is the one the next pass's
        first layers need.)"""
        self._busy = -1
        self._prefetch(k, ahead=self.n_slots)
        self._upload_ready()

    def _prefetch(self, k: int, ahead: int | None = None) -> None:
        """Issue reads for the streamed layers after k (at most `ahead`, default n_slots - 1) whose slots are free."""
        n = len(self.layers)
        for j in range(1, 1 + (self.n_slots - 1 if ahead is None else ahead)):
            kk = (k + j) % n
            s2 = kk % self.n_slots
            if self._owner[s2] == kk:
                continue
            if s2 == self._busy or self._owner[s2] in self._pending:
                break  # that slot still holds a layer this pass needs: keep order, stop here
            self._issue(kk)
            self._pending.add(kk)

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        # Reads already issued (the next pass's prefetch) are counted when they complete: let them,
        # so that bytes_from_disk and fills describe the same reads (at most a few slots' worth).
        futures_wait([f for futs in self._futures for f in futs])
        per_pass = sum(lay.size for lay in self.layouts if lay.key not in self.ram_layers)
        pool_bytes = (self.pool.nbytes if self.pool else 0) + sum(r.nbytes for r in self.repack_slots)
        common = self._stream_stats(pool_bytes, per_pass, self.bytes_from_disk / self.passes if self.passes else per_pass,
                                    self.streamed_on_device())
        return {
            **common.as_dict(), "slots": self.n_slots, "fills": self.fills, "prefetch_hits": self.prefetch_hits,
            "eval_callbacks": self.eval_filter.n_calls, "bytes_uploaded": getattr(self.pool, "uploaded_bytes", 0),
            "python_callbacks": self.eval_filter.n_python,
            "repack_bytes": sum(r.nbytes for r in self.repack_slots),   # storage beside the slots
            "bytes_repacked": sum(r.converted_bytes for r in self.repack_slots) + getattr(
                getattr(self.pool, "repacker", None), "converted_bytes", 0),
            "repacked_file": (self.repacked_file.report() if self.repacked_file is not None else
                              {"off": self.repacked_file_reason or "no directory given"} if any(self._convert) else None),
        }

    def streamed_on_device(self) -> bool:
        """True when every streamed weight lives in device (non-host) memory: the scheduler can
        then only run their matmuls on that device (the CPU backend cannot read VRAM)."""
        tensors = [t for layer in self._layer_tensors for t, _ in layer]
        return (self.device is not None and bool(tensors)
                and all(not lib.ggml_backend_buffer_is_host(t.buffer) for t in tensors))

    def close(self) -> None:
        self.reader.close()
        self.file_map.close()
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        for r in self.repack_slots:
            r.close()
        self.repack_slots = []
        if self._ram_copy is not None:
            self._ram_copy.close()
            self._ram_copy = None


def _after(futs: list[Future], fn) -> Future:
    """A future for `fn()` run when every future of `futs` has completed (on the thread that completed the
    last one; at once when there are none); it fails with the first of their errors, or fn's."""
    done: Future = Future()
    left = [len(futs)]
    lock = threading.Lock()

    def run(_=None) -> None:
        with lock:
            left[0] -= 1
            if left[0] > 0:
                return
        try:
            for f in futs:
                f.result()
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by whoever waits on `done`
            done.set_exception(exc)
        else:
            done.set_result(None)

    if not futs:
        left[0] = 1
        run()
    for f in futs:
        f.add_done_callback(run)
    return done

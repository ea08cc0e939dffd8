"""A llama.cpp inference context: batches, decode, logits, KV memory, the eval callback."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._lib import ffi, lib
from .errors import DecodeError, check_null
from .evalcb import EvalFilter
from .model import LlamaModel
from .owned import Owned


def default_threads() -> int:
    """Physical-ish core count: llama.cpp's default of 4 is ~3x slower on a 2-core machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


@dataclass
class ContextParams:
    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = 0  # 0: default_threads()
    n_threads_batch: int = 0
    embeddings: bool = False
    flash_attn: str = "auto"  # auto | on | off
    op_offload: bool = True
    n_seq_max: int = 1


class LlamaContext(Owned):
    """Owns a llama_context and a reusable batch. Not thread-safe: one caller at a time."""

    def __init__(self, model: LlamaModel, params: ContextParams | None = None,
                 eval_filter: EvalFilter | None = None) -> None:
        params = params or ContextParams()
        self.model = model
        self.params = params
        self.eval_filter = eval_filter
        p = lib.llama_context_default_params()
        p.n_ctx = params.n_ctx
        p.n_batch = params.n_batch
        p.n_ubatch = min(params.n_ubatch, params.n_batch)
        p.n_seq_max = params.n_seq_max
        p.n_threads = params.n_threads or default_threads()
        p.n_threads_batch = params.n_threads_batch or p.n_threads
        p.embeddings = params.embeddings
        p.op_offload = params.op_offload
        p.no_perf = False
        p.flash_attn_type = {"auto": lib.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": lib.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                             "off": lib.LLAMA_FLASH_ATTN_TYPE_DISABLED}[params.flash_attn]
        if eval_filter is not None:
            p.cb_eval = eval_filter.callback
            p.cb_eval_user_data = eval_filter.user_data
        self._abort = ffi.new("int *", 0)
        p.abort_callback = lib.hypura_abort_cb
        p.abort_callback_data = self._abort
        self.handle = check_null(lib.llama_init_from_model(model.handle, p),
                                 f"could not create a context of {params.n_ctx} tokens (out of memory?)")
        self.n_ctx = int(lib.llama_n_ctx(self.handle))
        self.n_batch = int(lib.llama_n_batch(self.handle))
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._n_vocab = model.n_vocab

    def _free(self) -> None:
        lib.llama_batch_free(self._batch)
        lib.llama_free(self.handle)

    # -- decoding -------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], pos0: int, all_logits: bool = False, seq_id: int = 0) -> None:
        """Decode tokens at positions pos0…, in batches of n_batch; logits for the last token
        (or every token with all_logits). Raises DecodeError, or the eval handler's exception."""
        n_total = len(tokens)
        if n_total == 0:
            return
        if pos0 + n_total > self.n_ctx:
            raise DecodeError(1, f"decode of {n_total} tokens at position {pos0} exceeds n_ctx={self.n_ctx}:")
        b = self._batch
        for start in range(0, n_total, self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            n = len(chunk)
            last = start + n == n_total
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos0 + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = 1 if (all_logits or (last and i == n - 1)) else 0
            b.n_tokens = n
            rc = lib.llama_decode(self.handle, b)
            self._raise_filter_error()
            if rc != 0:
                if self._abort[0]:
                    self._abort[0] = 0
                    raise DecodeError(2)
                raise DecodeError(rc)

    def _raise_filter_error(self) -> None:
        if self.eval_filter is not None:
            err = self.eval_filter.take_error()
            if err is not None:
                raise err

    def abort(self) -> None:
        """Ask a running decode to stop (honoured by the CPU backend between graph nodes)."""
        self._abort[0] = 1

    def clear_abort(self) -> None:
        """Forget an abort() that no decode has seen (it would stop the next one)."""
        self._abort[0] = 0

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of output row i (-1: the last) as a read-only numpy view (copy to keep)."""
        ptr = check_null(lib.llama_get_logits_ith(self.handle, i), f"no logits for output {i}")
        arr = np.frombuffer(ffi.buffer(ptr, self._n_vocab * 4), dtype=np.float32)
        arr.flags.writeable = False
        return arr

    def embeddings_ith(self, i: int) -> np.ndarray:
        """Hidden state of output row i of the last decode (with embeddings enabled), copied."""
        ptr = check_null(lib.llama_get_embeddings_ith(self.handle, i), f"no embeddings for output {i}")
        return np.frombuffer(ffi.buffer(ptr, self.model.n_embd * 4), dtype=np.float32).copy()

    # -- KV memory ------------------------------------------------------------------------
    def clear(self) -> None:
        lib.llama_memory_clear(lib.llama_get_memory(self.handle), True)

    def truncate(self, n_keep: int, seq_id: int = 0) -> bool:
        """Drop cached positions >= n_keep (for prefix reuse)."""
        return bool(lib.llama_memory_seq_rm(lib.llama_get_memory(self.handle), seq_id, n_keep, -1))

    def pos_max(self, seq_id: int = 0) -> int:
        """The largest position in the KV cache of `seq_id` (-1 when it is empty)."""
        return int(lib.llama_memory_seq_pos_max(lib.llama_get_memory(self.handle), seq_id))

    def set_embeddings(self, on: bool) -> None:
        lib.llama_set_embeddings(self.handle, on)

    def perf(self) -> dict:
        d = lib.llama_perf_context(self.handle)
        return {"t_load_ms": d.t_load_ms, "t_p_eval_ms": d.t_p_eval_ms, "t_eval_ms": d.t_eval_ms,
                "n_p_eval": d.n_p_eval, "n_eval": d.n_eval, "n_reused": d.n_reused}

    def synchronize(self) -> None:
        lib.llama_synchronize(self.handle)

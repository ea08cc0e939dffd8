"""The router's choice, read and rewritten in place.

llama.cpp's top-k node (`ffn_moe_topk-N`) holds, per token, the ids of the experts it chose: an int32
view `[n_used, n_tok]` with its own strides (a view into the argsort, not contiguous). The streamer reads
it, makes those experts resident, and rewrites each id to the cache slot holding that expert — after
`ffn_moe_weights-N` consumed the real ids, before the first expert matmul reads them.

A decode pass (one token) has one contiguous row of `n_used` ids: it is read and written as a plain list,
with no numpy on the path (the decode thread's own time at every layer's split is what a token waits for).
"""
from __future__ import annotations

from array import array

import numpy as np

from hypura_llama import ffi, lib

from ..directio import StreamError

I32 = next(t for t in "ilh" if array(t).itemsize == 4)   # the array typecode of an int32


class TopK:
    """The ids of one top-k node: `flat` lists them token by token (`n_tok` × `n_used`); `ids` is the same
    as a read-only `[n_tok, n_used]` array."""

    def __init__(self, node) -> None:
        self.node = node
        self.n_used, self.n_tok = int(node.ne[0]), int(node.ne[1])
        self._strides = (int(node.nb[1]), int(node.nb[0]))
        # one token whose ids are contiguous: the first n_used int32 of the view are all there is
        self._row = self.n_tok == 1 and self._strides[1] == 4
        self._span = self.n_used * 4 if self._row else int(lib.ggml_nbytes(node))
        self._raw = bytearray(self._span)
        if self.n_tok:
            lib.ggml_backend_tensor_get(node, ffi.from_buffer(self._raw), 0, self._span)
        self._ids: np.ndarray | None = None
        self.flat: list[int] = array(I32, self._raw).tolist() if self._row else self.ids.ravel().tolist()

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.lib.stride_tricks.as_strided(np.frombuffer(self._raw, dtype=np.int32),
                                                        shape=(self.n_tok, self.n_used), strides=self._strides,
                                                        writeable=False)
        return self._ids

    def chosen(self, layer: int, n_expert: int) -> list[int]:
        """The distinct experts chosen, sorted; an id outside [0, n_expert) is an error."""
        distinct = sorted(set(self.flat))
        if distinct and (distinct[0] < 0 or distinct[-1] >= n_expert):
            raise StreamError(f"layer {layer}: router produced expert ids outside [0, {n_expert})")
        return distinct

    def rewrite(self, slot_of: dict[int, int], n_expert: int) -> None:
        """Write each chosen id's cache slot (`slot_of[expert]`) back into the node."""
        if self._row:
            out = array(I32, [slot_of[e] for e in self.flat])
            lib.ggml_backend_tensor_set(self.node, ffi.from_buffer(out), 0, self._span)
            return
        lut = np.arange(n_expert, dtype=np.int32)
        for e, s in slot_of.items():
            lut[e] = s
        out = np.frombuffer(self._raw, dtype=np.int32).copy()
        view = np.lib.stride_tricks.as_strided(out, shape=(self.n_tok, self.n_used), strides=self._strides)
        view[:] = lut[self.ids]
        lib.ggml_backend_tensor_set(self.node, ffi.from_buffer(out), 0, self._span)

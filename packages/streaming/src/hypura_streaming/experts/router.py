"""The router's choice, read and rewritten in place.

llama.cpp's top-k node (`ffn_moe_topk-N`) holds, per token, the ids of the experts it chose: an int32
view `[n_used, n_tok]` with its own strides (a view into the argsort, not contiguous). The streamer reads
it, makes those experts resident, and rewrites each id to the cache slot holding that expert — after
`ffn_moe_weights-N` consumed the real ids, before the first expert matmul reads them.
"""
from __future__ import annotations

import numpy as np

from hypura_llama import ffi, lib

from ..directio import StreamError


class TopK:
    """The ids of one top-k node: `ids` is a read-only `[n_tok, n_used]` array over a copy of its bytes."""

    def __init__(self, node) -> None:
        self.node = node
        self.n_used, self.n_tok = int(node.ne[0]), int(node.ne[1])
        self._strides = (int(node.nb[1]), int(node.nb[0]))
        self._span = int(lib.ggml_nbytes(node))
        self._raw = bytearray(self._span)
        if self.n_tok:
            lib.ggml_backend_tensor_get(node, ffi.from_buffer(self._raw), 0, self._span)
        self.ids = np.lib.stride_tricks.as_strided(np.frombuffer(self._raw, dtype=np.int32),
                                                   shape=(self.n_tok, self.n_used), strides=self._strides,
                                                   writeable=False)

    def chosen(self, layer: int, n_expert: int) -> list[int]:
        """The distinct experts chosen, sorted; an id outside [0, n_expert) is an error."""
        if self.ids.min() < 0 or self.ids.max() >= n_expert:
            raise StreamError(f"layer {layer}: router produced expert ids outside [0, {n_expert})")
        return sorted(set(self.ids.ravel().tolist()))

    def rewrite(self, slot_of: dict[int, int], n_expert: int) -> None:
        """Write each chosen id's cache slot (`slot_of[expert]`) back into the node."""
        lut = np.arange(n_expert, dtype=np.int32)
        for e, s in slot_of.items():
            lut[e] = s
        out = np.frombuffer(self._raw, dtype=np.int32).copy()
        view = np.lib.stride_tricks.as_strided(out, shape=(self.n_tok, self.n_used), strides=self._strides)
        view[:] = lut[self.ids]
        lib.ggml_backend_tensor_set(self.node, ffi.from_buffer(out), 0, self._span)

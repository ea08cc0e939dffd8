"""The eval-callback filter: name rules in C, Python only for the nodes that matter.

A rule matches node names "<prefix><layer><suffix>" (e.g. prefix "ffn_norm-" matches
"ffn_norm-12"). Layers are enabled per rule. Actions:

- ``SPLIT``: the scheduler computes everything up to the node, synchronizes, then calls the
  handler with ``ask=False`` *before any later node runs* — the place to make weights resident.
- ``NOTE``: the handler is called at ``ask=True`` (nothing has been computed yet for that node)
  and no split happens — the place to remember a tensor without breaking kernel fusion.

A handler that raises stops the graph at the next split (never computing on stale weights);
the exception is re-raised by the context after llama_decode returns.
"""
from __future__ import annotations

from typing import Callable

from ._lib import ffi, lib
from .errors import check_rc

SPLIT = lib.HYPURA_ACT_SPLIT
NOTE = lib.HYPURA_ACT_NOTE
MAX_LAYERS = lib.HYPURA_MAX_LAYERS

# handler(tensor_ptr, ask, rule_index, layer) -> None
Handler = Callable[[object, bool, int, int], None]


class EvalFilter:
    """Owns a C `hypura_filter` and dispatches matching nodes to one Python handler."""

    def __init__(self, handler: Handler) -> None:
        self._c = ffi.new("hypura_filter *")
        self._handle = ffi.new_handle(self)
        self._c.handle = self._handle
        self.handler = handler
        self.error: BaseException | None = None
        self.rules: list[tuple[str, str, int]] = []

    def add_rule(self, prefix: str, suffix: str = "", action: int = SPLIT, layers=()) -> int:
        r = check_rc(lib.hypura_filter_add_rule(self._c, prefix.encode(), suffix.encode(), action),
                     f"cannot add eval rule {prefix!r}{suffix!r} (too many rules or pattern too long)", ValueError)
        self.rules.append((prefix, suffix, action))
        for layer in layers:
            self.set_layer(r, layer, True)
        return r

    def set_layer(self, rule: int, layer: int, enabled: bool = True) -> None:
        if not 0 <= layer < MAX_LAYERS:
            raise ValueError(f"layer {layer} out of range (max {MAX_LAYERS - 1})")
        lib.hypura_filter_set_layer(self._c, rule, layer, 1 if enabled else 0)

    @property
    def callback(self):
        return lib.hypura_eval_cb

    @property
    def user_data(self):
        return self._c

    @property
    def n_calls(self) -> int:
        return int(self._c.n_calls)

    @property
    def n_python(self) -> int:
        return int(self._c.n_python)

    def take_error(self) -> BaseException | None:
        """Return and clear the stored handler exception (and re-arm the filter)."""
        err, self.error = self.error, None
        self._c.failed = 0
        return err


@ffi.def_extern()
def hypura_py_node(handle, tensor, ask, rule, layer):
    filt: EvalFilter = ffi.from_handle(handle)
    try:
        filt.handler(tensor, bool(ask), int(rule), int(layer))
        return 1
    except BaseException as exc:  # noqa: BLE001 - stored and re-raised after llama_decode
        if filt.error is None:
            filt.error = exc
        return 0


def tensor_name(t) -> str:
    return ffi.string(t.name).decode("utf-8", "replace")

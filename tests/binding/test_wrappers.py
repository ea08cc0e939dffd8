"""The binding's own pieces: lazy set-up, the NULL/rc checks, the set-tensor callback, the dry-run estimate."""
from __future__ import annotations

import subprocess
import sys

import pytest

import hypura_llama as h
from hypura_llama.overhead import overhead_from_log


def test_import_does_not_initialise_llama_cpp():
    code = ("import hypura_llama as h, logging\n"
            "assert not h.initialised(), 'initialised at import'\n"
            "h.devices()\n"
            "assert h.initialised()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_check_null_and_check_rc():
    assert h.check_null(h.ffi.new("int *"), "x") is not None
    with pytest.raises(h.LlamaError, match="nothing there"):
        h.check_null(h.ffi.NULL, "nothing there")
    assert h.check_rc(0, "x") == 0 and h.check_rc(7, "x") == 7
    with pytest.raises(ValueError, match="bad rule"):
        h.check_rc(-1, "bad rule", ValueError)


def test_closing_twice_frees_once():
    buf = h.BufferType.cpu().allocate(4096)
    assert buf.size >= 4096 and buf.is_host
    buf.close()
    buf.close()
    assert buf.handle is None


def _gguf_ctx(path):
    params = h.ffi.new("struct gguf_init_params *")
    params.no_alloc, params.ctx = True, h.ffi.NULL
    return h.check_null(h.lib.gguf_init_from_file(str(path).encode(), params[0]), f"{path}: not GGUF")


def test_set_tensor_callback_error_is_reraised_after_llama_cpp_returns(default_model):
    ctx = _gguf_ctx(default_model)
    seen = []

    def on_tensor(t):
        seen.append(h.tensor_name(t))
        if len(seen) == 3:
            raise KeyError("third tensor")

    try:
        with pytest.raises(KeyError, match="third tensor"):
            h.load_from_user(ctx, on_tensor, h.ModelParams(n_gpu_layers=0, use_extra_bufts=False), default_model)
    finally:
        h.lib.gguf_free(ctx)
    assert len(seen) == 3     # no call after the one that raised


def test_overhead_from_log_lines():
    lines = ["llama_kv_cache:        CPU KV buffer size =     0.00 MiB",
             "llama_kv_cache: size =   18.00 MiB (  1024 cells,  18 layers,  1/1 seqs), K (f16):    9.00 MiB",
             "llama_context:        CPU compute buffer size =   514.25 MiB",
             "llama_context:        CPU  output buffer size =     1.00 MiB",
             "unrelated line = 3.00 MiB"]
    assert overhead_from_log(lines) == int((18.0 + 514.25 + 1.0) * (1 << 20))


def test_estimate_overhead_of_the_default_model(default_model):
    small, large = h.estimate_overhead(default_model, 256), h.estimate_overhead(default_model, 2048)
    assert 0 < small < large      # the KV cache grows with the context

"""A loaded llama.cpp model: parameters, metadata, vocabulary, tokenizer."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ._lib import cstr, ensure_init, ffi, lib
from .backend import BufferType, Device
from .errors import check_null, check_rc
from .owned import Owned, c_property

LOAD_MODES = {
    "none": lib.LLAMA_LOAD_MODE_NONE,
    "mmap": lib.LLAMA_LOAD_MODE_MMAP,
    "mlock": lib.LLAMA_LOAD_MODE_MLOCK,
    "mmap_mlock": lib.LLAMA_LOAD_MODE_MMAP_MLOCK,
    "dio": lib.LLAMA_LOAD_MODE_DIRECT_IO,
}


@dataclass
class ModelParams:
    """What llama_model_params Hypura sets. `overrides`: (regex, BufferType), first match wins."""

    n_gpu_layers: int = -1
    load_mode: str = "mmap"
    overrides: Sequence[tuple[str, BufferType]] = ()
    devices: Sequence[Device] | None = None
    use_extra_bufts: bool = True
    # Overrides to the CPU buffer type otherwise land in the GPU's pinned host buffer type (llama.cpp
    # prefers it for CPU weights when a GPU exists), which pins and touches all of them.
    no_host: bool = False
    no_alloc: bool = False
    vocab_only: bool = False
    _keep: list = field(default_factory=list, repr=False)

    def to_c(self):
        if self.load_mode not in LOAD_MODES:
            raise ValueError(f"unknown load mode {self.load_mode!r} (one of {', '.join(LOAD_MODES)})")
        p = lib.llama_model_default_params()
        p.n_gpu_layers = self.n_gpu_layers
        p.load_mode = LOAD_MODES[self.load_mode]
        p.use_extra_bufts = self.use_extra_bufts
        p.no_host = self.no_host
        p.no_alloc = self.no_alloc
        p.vocab_only = self.vocab_only
        self._keep.clear()
        if self.overrides:
            arr = ffi.new("struct llama_model_tensor_buft_override[]", len(self.overrides) + 1)
            for i, (pattern, buft) in enumerate(self.overrides):
                s = ffi.new("char[]", pattern.encode())
                self._keep.append(s)
                arr[i].pattern = s
                arr[i].buft = buft.handle
            arr[len(self.overrides)].pattern = ffi.NULL
            self._keep.append(arr)
            p.tensor_buft_overrides = arr
        if self.devices is not None:
            devs = ffi.new("ggml_backend_dev_t[]", [d.handle for d in self.devices] + [ffi.NULL])
            self._keep.append(devs)
            p.devices = devs
        return p


class LlamaModel(Owned):
    """Owns a llama_model. Use as a context manager or call close()."""

    def __init__(self, handle, path: str, params: ModelParams) -> None:
        self.handle = handle
        self.path = path
        self.params = params
        self.vocab = lib.llama_model_get_vocab(handle)

    @classmethod
    def load(cls, path: str | os.PathLike, params: ModelParams | None = None) -> LlamaModel:
        """Load a GGUF file. The caller validates the file first (llama.cpp aborts on some malformed files)."""
        ensure_init()
        params = params or ModelParams()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such model file")
        handle = check_null(lib.llama_model_load_from_file(path.encode(), params.to_c()),
                            f"{path}: llama.cpp could not load the model (set -vv to see its log)")
        return cls(handle, path, params)

    def _free(self) -> None:
        lib.llama_model_free(self.handle)

    # -- metadata -------------------------------------------------------------------------
    n_ctx_train = c_property(lib.llama_model_n_ctx_train)
    n_embd = c_property(lib.llama_model_n_embd)
    n_layer = c_property(lib.llama_model_n_layer)
    n_vocab = c_property(lib.llama_vocab_n_tokens, of="vocab")
    size = c_property(lib.llama_model_size)
    n_params = c_property(lib.llama_model_n_params)
    has_encoder = c_property(lib.llama_model_has_encoder, bool)

    @property
    def description(self) -> str:
        buf = ffi.new("char[256]")
        lib.llama_model_desc(self.handle, buf, 256)
        return cstr(buf)

    def metadata(self) -> dict[str, str]:
        """All GGUF key/value pairs as strings (arrays are summarised by llama.cpp)."""
        out = {}
        kbuf, vbuf = ffi.new("char[256]"), ffi.new("char[65536]")
        for i in range(lib.llama_model_meta_count(self.handle)):
            if lib.llama_model_meta_key_by_index(self.handle, i, kbuf, 256) < 0:
                continue
            if lib.llama_model_meta_val_str_by_index(self.handle, i, vbuf, 65536) < 0:
                continue
            out[cstr(kbuf)] = cstr(vbuf)
        return out

    def chat_template(self, name: str | None = None) -> str | None:
        ptr = lib.llama_model_chat_template(self.handle, name.encode() if name else ffi.NULL)
        return None if ptr == ffi.NULL else cstr(ptr)

    # -- vocabulary -----------------------------------------------------------------------
    bos = c_property(lib.llama_vocab_bos, of="vocab")
    eos = c_property(lib.llama_vocab_eos, of="vocab")
    add_bos = c_property(lib.llama_vocab_get_add_bos, bool, of="vocab")

    def is_eog(self, token: int) -> bool:
        return bool(lib.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        return cstr(lib.llama_vocab_get_text(self.vocab, token))

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = ffi.new("llama_token[]", n_max)
        n = lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = ffi.new("llama_token[]", n_max)
            n = lib.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
            check_rc(n, f"tokenization failed ({n})")
        return list(ffi.unpack(buf, n))

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token (may be a partial UTF-8 sequence)."""
        buf = ffi.new("char[128]")
        n = lib.llama_token_to_piece(self.vocab, token, buf, 128, 0, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        return ffi.unpack(buf, max(n, 0))

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        arr = ffi.new("llama_token[]", list(tokens))
        size = max(64, 16 * len(tokens))
        buf = ffi.new("char[]", size)
        n = lib.llama_detokenize(self.vocab, arr, len(tokens), buf, size, remove_special, unparse_special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_detokenize(self.vocab, arr, len(tokens), buf, -n, remove_special, unparse_special)
        return ffi.unpack(buf, n).decode("utf-8", "replace")


def report_bus_errors(message: str) -> None:
    """From now on a SIGBUS — a memory-mapped model file that shrank under this process (truncated or rewritten
    in place while llama.cpp reads it) — writes `message` as one line to stderr and exits with status 74, instead
    of a core dump: nothing can be resumed inside llama.cpp's compute threads."""
    check_rc(lib.hypura_report_bus_errors(message.encode("utf-8", "replace")), "could not install the SIGBUS handler")

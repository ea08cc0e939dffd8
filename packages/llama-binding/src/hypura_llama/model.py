"""A loaded llama.cpp model: parameters, metadata, vocabulary, tokenizer."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ._lib import cstr, ensure_init, ffi, lib
from .backend import BufferType, Device
from .errors import LlamaError

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


class LlamaModel:
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
        handle = lib.llama_model_load_from_file(path.encode(), params.to_c())
        if handle == ffi.NULL:
            raise LlamaError(f"{path}: llama.cpp could not load the model (set -vv to see its log)")
        return cls(handle, path, params)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self.handle is not None:
            lib.llama_model_free(self.handle)
            self.handle = None

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata -------------------------------------------------------------------------
    @property
    def n_ctx_train(self) -> int:
        return int(lib.llama_model_n_ctx_train(self.handle))

    @property
    def n_embd(self) -> int:
        return int(lib.llama_model_n_embd(self.handle))

    @property
    def n_layer(self) -> int:
        return int(lib.llama_model_n_layer(self.handle))

    @property
    def n_vocab(self) -> int:
        return int(lib.llama_vocab_n_tokens(self.vocab))

    @property
    def size(self) -> int:
        return int(lib.llama_model_size(self.handle))

    @property
    def n_params(self) -> int:
        return int(lib.llama_model_n_params(self.handle))

    @property
    def description(self) -> str:
        buf = ffi.new("char[256]")
        lib.llama_model_desc(self.handle, buf, 256)
        return cstr(buf)

    @property
    def has_encoder(self) -> bool:
        return bool(lib.llama_model_has_encoder(self.handle))

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
    @property
    def bos(self) -> int:
        return int(lib.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        return int(lib.llama_vocab_eos(self.vocab))

    @property
    def add_bos(self) -> bool:
        return bool(lib.llama_vocab_get_add_bos(self.vocab))

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
            if n < 0:
                raise LlamaError(f"tokenization failed ({n})")
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

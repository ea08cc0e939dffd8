"""A synthetic byte-level BPE ("gpt2") vocabulary that llama.cpp tokenizes and detokenizes.

Tokens: the 256 GPT-2 byte symbols (every byte sequence is encodable), then merges built from common
letters (``t h`` → ``th``, ``th e`` → ``the`` ...), then filler tokens up to the size asked, and two control
tokens at the end (``<|bos|>``, ``<|eos|>``). Every merge's result is a token of the vocabulary.
"""
from __future__ import annotations

from typing import Any

_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"
BOS, EOS = "<|bos|>", "<|eos|>"


def byte_symbols() -> list[str]:
    """GPT-2's ``bytes_to_unicode``: printable stand-ins for the 256 byte values, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def build_vocab(n_vocab: int) -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types) of exactly ``n_vocab`` tokens (at least 300)."""
    if n_vocab < 300:
        raise ValueError("a synthetic vocabulary needs at least 300 tokens")
    tokens = byte_symbols()
    seen = set(tokens)
    merges: list[str] = []
    room = n_vocab - 2
    space = tokens[ord(" ")]
    alphabet = [space] + list(_LETTERS)
    frontier = alphabet[:]
    while len(tokens) < room and frontier:
        nxt = []
        for left in frontier:
            for right in _LETTERS:
                tok = left + right
                if len(tokens) >= room:
                    break
                if tok in seen:
                    continue
                tokens.append(tok)
                seen.add(tok)
                merges.append(f"{left} {right}")
                nxt.append(tok)
            if len(tokens) >= room:
                break
        frontier = nxt
    i = 0
    while len(tokens) < room:                # unreachable fillers: valid, never produced by merges
        tokens.append(f"<|unused_{i}|>")
        i += 1
    tokens += [BOS, EOS]
    types = [1] * (n_vocab - 2) + [3, 3]     # 1 normal, 3 control
    return tokens, merges, types


def tokenizer_kv(n_vocab: int) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` key/values of a vocabulary of ``n_vocab`` tokens."""
    tokens, merges, types = build_vocab(n_vocab)
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": n_vocab - 2, "tokenizer.ggml.eos_token_id": n_vocab - 1,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False}

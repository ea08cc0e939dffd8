"""Embeddings for both APIs (/api/embed, /api/embeddings, /v1/embeddings): one loop over the inputs.

The inputs are bounded (`MAX_INPUTS`, and each text by the context before it is tokenized), and the
loop stops between inputs when the client goes away: a 3 000-input request from a client that left
after a second does not keep the model busy for minutes.
"""
from __future__ import annotations

import threading

from flask import request

from hypura_engine import ModelEntry

from .errors import APIError, bad_request
from .jobs import leased, max_prompt_chars
from .remote import WorkerCrashed
from .state import state

MAX_INPUTS = 2048   # OpenAI's limit per request


def check_inputs(texts: object, allow_empty: bool = True) -> list[str]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not (texts or allow_empty):
        raise bad_request("input must be a string or a list of strings")
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"{len(texts)} inputs: at most {MAX_INPUTS} in one request")
    return texts


def embed_texts(entry: ModelEntry, texts: list[str], truncate: bool, num_ctx: int | None,
                keep_alive: float | None) -> tuple[list[list[float]], int, int]:
    """Embeddings of `texts` → (vectors, prompt tokens, load_ns). Too long with truncate off → 400."""
    cancel = threading.Event()
    with leased(state().manager, entry, num_ctx, keep_alive, request.environ, cancel) as lease:
        runner = lease.runner
        limit = min(runner.n_ctx, runner.n_batch) - 1
        chars = max_prompt_chars(runner)
        vectors, count = [], 0
        for text in check_inputs(texts):
            if cancel.is_set():
                raise APIError(499, "client disconnected")
            if len(text) > chars:
                if not truncate:
                    raise bad_request(f"input of {len(text)} characters exceeds the context length of "
                                      f"{limit} tokens")
                text = text[:chars]   # still more than `limit` tokens: the same truncation as before
            try:
                n = len(runner.tokenize(text))
                if n > limit and not truncate:
                    raise bad_request(f"input of {n} tokens exceeds the context length of {limit} tokens")
                count += min(n, limit)
                vectors.append(runner.embed(text))
            except WorkerCrashed as exc:
                raise APIError(500, str(exc)) from None
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        return vectors, count, lease.load_ns


def normalise(v: list[float]) -> list[float]:
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]

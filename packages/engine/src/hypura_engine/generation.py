"""Options, events and results of one generation (Ollama's vocabulary, nanosecond timings).

Pure Python (no native code): the server parses requests into these in its own process; the models
run in worker processes.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingOptions:
    """How the next token is chosen (Ollama's option names); `hypura_llama.Sampler` builds its chain from it."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    seed: int = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: random
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF, root rule "root"

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "seed", "repeat_penalty", "repeat_last_n",
                  "presence_penalty", "frequency_penalty")


@dataclass
class GenerateOptions:
    num_predict: int = -1          # -1: until end of generation or context full
    stop: list[str] = field(default_factory=list)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)

    @classmethod
    def from_ollama(cls, options: dict[str, Any] | None, grammar: str | None = None) -> GenerateOptions:
        """Ollama's `options` object; unknown keys are ignored, as Ollama does. Raises ValueError on bad types."""
        options = dict(options or {})
        s = SamplingOptions()
        for key in _SAMPLING_KEYS:
            if options.get(key) is not None:
                want = type(getattr(s, key))
                val = options[key]
                if isinstance(val, bool) or not isinstance(val, (int, float)):
                    raise ValueError(f"option {key!r} must be a number")
                setattr(s, key, want(val))
        s.grammar = grammar
        stop = options.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
            raise ValueError("option 'stop' must be a list of strings")
        n = options.get("num_predict", -1)
        if n is None:
            n = -1
        if isinstance(n, bool) or not isinstance(n, (int, float)):
            raise ValueError("option 'num_predict' must be a number")
        return cls(num_predict=int(n), stop=[x for x in stop if x], sampling=s)


@dataclass
class GenerationResult:
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    done_reason: str = "stop"       # stop | length | aborted
    prompt_tokens: int = 0          # prompt tokens evaluated (after KV-prefix reuse)
    prompt_total: int = 0           # prompt length
    prompt_ns: int = 0
    eval_ns: int = 0                # time in llama_decode for generated tokens
    sample_ns: int = 0
    total_ns: int = 0
    load_ns: int = 0
    speculative: dict[str, Any] | None = None   # with a draft: passes, drafted, accepted, tokens_per_pass ...

    @property
    def eval_tokens(self) -> int:
        return len(self.tokens)

    def ended(self, cancel, limit: int) -> bool:
        """Before the next token: the generation ends here (cancelled: "aborted"; `limit` tokens: "length"),
        with `done_reason` set; plain and speculative decoding check the same way."""
        if cancel is not None and cancel.is_set():
            self.done_reason = "aborted"
            return True
        if len(self.tokens) >= limit:
            self.done_reason = "length"
            return True
        return False

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / (self.prompt_ns / 1e9) if self.prompt_ns else 0.0

    @property
    def eval_tps(self) -> float:
        """Decode tokens per second (time spent in llama_decode, as llama.cpp's eval time)."""
        n = max(len(self.tokens) - 1, 0)  # the first token comes from the prompt's logits
        return n / (self.eval_ns / 1e9) if self.eval_ns and n else 0.0


class TextStream:
    """Turns token bytes into text: incremental UTF-8, stop strings held back until decided."""

    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = stop
        self.text = ""       # all text so far (up to a stop string)
        self._emitted = 0
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add a token's bytes; return the newly safe-to-emit text."""
        self.text += self._decoder.decode(piece)
        return self._release(final=False)

    def finish(self) -> str:
        self.text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        for s in self.stop:
            i = self.text.find(s, max(0, self._emitted - len(s)))
            if i >= 0:
                self.text = self.text[:i]
                self.stopped = True
                final = True
        limit = len(self.text)
        if not final:
            for s in self.stop:  # hold back a suffix that may become a stop string
                for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(s[:k]):
                        limit = min(limit, len(self.text) - k)
                        break
        out = self.text[self._emitted:limit]
        self._emitted = max(self._emitted, limit)
        return out

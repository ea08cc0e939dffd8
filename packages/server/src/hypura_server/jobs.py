"""One generation request, API-neutral: queue for the model, build the prompt, stream events.

The Ollama and OpenAI blueprints both go through `start`: errors that belong in the status line
(unknown model, bad options, unsupported features, load failures) are raised before the response
starts; after that, generation yields `Delta`s and one `Done`.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from hypura_engine import ChatTemplate, GenerateOptions, GenerationResult, ModelEntry

from .disconnect import WATCHER
from .errors import APIError, bad_request
from .manager import Cancelled, Lease, ModelManager
from .outputs import THINK_OPEN, OutputParser
from .remote import WorkerCrashed, WorkerError

if TYPE_CHECKING:   # the engine's Runner interface; models run in worker processes (no native code here)
    from hypura_engine import Runner

PromptBuilder = Callable[["Runner"], "Prompt"]


@dataclass
class Prompt:
    tokens: list[int]
    in_think: bool = False     # the rendered prompt opened a think block for the model


@dataclass
class Job:
    entry: ModelEntry
    build: PromptBuilder
    opts: GenerateOptions = field(default_factory=GenerateOptions)
    num_ctx: int | None = None
    keep_alive: float | None = None
    tools: list[dict[str, Any]] | None = None
    think: bool | None = None


@dataclass
class Delta:
    content: str
    thinking: str = ""


@dataclass
class Done:
    result: GenerationResult
    tool_calls: list[dict[str, Any]] | None
    context: list[int]
    load_ns: int
    total_ns: int


@contextmanager
def leased(manager: ModelManager, entry: ModelEntry, num_ctx: int | None, keep_alive: float | None,
           environ: dict[str, Any], cancel: threading.Event | None = None) -> Iterator[Lease]:
    """``with leased(...) as lease:`` — the model for the block (the client watched meanwhile: a disconnect
    sets `cancel`); given back with `keep_alive` however the block ends."""
    cancel = cancel or threading.Event()
    lease, unwatch = acquire(manager, entry, num_ctx, cancel, environ)
    try:
        yield lease
    finally:
        try:
            lease.release(keep_alive)
        finally:
            unwatch()


def acquire(manager: ModelManager, entry: ModelEntry, num_ctx: int | None, cancel: threading.Event,
            environ: dict[str, Any]) -> tuple[Lease, Callable[[], None]]:
    """Wait for and load the model, watching the client meanwhile. Returns (lease, stop-watching)."""
    unwatch = WATCHER.watch(environ, cancel)
    try:
        return manager.lease(entry, num_ctx, cancel), unwatch
    except Cancelled:
        unwatch()
        raise APIError(499, "client disconnected") from None
    except (WorkerCrashed, WorkerError) as exc:
        unwatch()
        raise APIError(500, f"failed to load model '{entry.name}': {exc}") from None
    except ValueError as exc:
        unwatch()
        raise bad_request(str(exc)) from None
    except Exception as exc:
        unwatch()
        raise APIError(500, f"failed to load model '{entry.name}': {exc}") from exc


class Started:
    """A job whose model is leased and whose prompt is built; iterate `events()` exactly once.

    From the moment the lease is taken, whatever fails — the prompt builder, the template, the output
    parser, the first token — gives the model back before the error leaves `__init__`; after that the
    owner (a ``with`` block, or a streamed response's close) calls `close`, which is idempotent."""

    def __init__(self, manager: ModelManager, job: Job, cancel: threading.Event, environ: dict[str, Any]) -> None:
        self.t0 = time.perf_counter_ns()
        self.job, self.cancel = job, cancel
        self._events: Iterator[Delta | Done] | None = None
        self._gen: Iterator[str | GenerationResult] | None = None
        self.lease, self._unwatch = acquire(manager, job.entry, job.num_ctx, cancel, environ)
        try:
            self.lease.keep_alive = job.keep_alive
            self.runner = self.lease.runner
            self.prompt = prompt = job.build(self.runner)
            if len(prompt.tokens) >= self.runner.n_ctx:
                raise bad_request(f"prompt of {len(prompt.tokens)} tokens does not fit the context of "
                                  f"{self.runner.n_ctx} tokens (raise num_ctx)")
            self.parser = OutputParser(think=bool(job.think) or (job.think is None and prompt.in_think),
                                       in_think=prompt.in_think, tools=job.tools)
            self._gen = self.runner.generate(prompt.tokens, job.opts, cancel)
            # the first piece (prompt evaluated, first token sampled) before the status line: a crash or
            # an error there is still a proper HTTP status, not an in-band error in a 200 stream
            self._first: list[str | GenerationResult] = [next(self._gen)]
        except BaseException as exc:
            self.close()
            if isinstance(exc, WorkerCrashed):
                raise APIError(500, str(exc)) from None
            if isinstance(exc, (ValueError, LookupError)):
                raise bad_request(str(exc)) from None
            if isinstance(exc, StopIteration):
                raise APIError(500, "generation ended without a result") from None
            raise

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self) -> Iterator[Delta | Done]:
        self._events = self._run()
        return self._events

    def _items(self) -> Iterator[str | GenerationResult]:
        yield from self._first
        self._first = []
        yield from self._gen

    def _run(self) -> Iterator[Delta | Done]:
        try:
            result: GenerationResult | None = None
            for item in self._items():
                if isinstance(item, str):
                    content, thinking = self.parser.feed(item)
                    if content or thinking:
                        yield Delta(content, thinking)
                else:
                    result = item
            content, thinking = self.parser.finish()
            if content or thinking:
                yield Delta(content, thinking)
            assert result is not None
            yield Done(result, self.parser.tool_calls, self.prompt.tokens + result.tokens, self.lease.load_ns,
                       time.perf_counter_ns() - self.t0)
        finally:
            self._events = None   # this generator is finishing: nothing to close
            self.close()

    def close(self) -> None:
        """Stop generating (if running) and give the model back; safe to call more than once."""
        events, self._events = self._events, None
        if events is not None:
            self.cancel.set()
            events.close()
        gen, self._gen = self._gen, None
        try:
            if gen is not None:
                self.cancel.set()
                gen.close()      # a generation never iterated to its end: the worker is told to stop
        finally:
            self.lease.release(self.job.keep_alive)
            self._unwatch()


def collect(started: Started) -> tuple[str, str, Done]:
    """A whole (non-streamed) answer: (content, thinking, Done); the model is given back however it ends."""
    text, thinking = [], []
    with started:
        for ev in started.events():
            if isinstance(ev, Delta):
                text.append(ev.content)
                thinking.append(ev.thinking)
            else:
                return "".join(text), "".join(thinking), ev
    raise APIError(500, "generation ended without a result")


def check_template(source: Any) -> None:
    """A request's (or a stored) template override compiles, before the model is leased; else 400."""
    if source is None:
        return
    try:
        ChatTemplate(source)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def template_for(runner: Runner, override: str | None) -> ChatTemplate:
    """The model's chat template, or a per-name override registered with /api/create."""
    if not override:
        return runner.template
    return ChatTemplate(override, runner.template.bos_token, runner.template.eos_token)


def render(runner: Runner, template: ChatTemplate, messages: list[dict[str, Any]],
           tools: list | None = None, think: bool | None = None, context: list[int] | None = None) -> Prompt:
    """Render a chat through `template` to tokens (after `context`, Ollama's previous-turn tokens)."""
    text = template.render(messages, add_generation_prompt=True, tools=tools or None, think=think,
                           max_chars=max_prompt_chars(runner))
    check_text(runner, text)
    in_think = text.rstrip().endswith(THINK_OPEN) and think is not False
    bos = template.bos_token
    if context:
        if bos and text.startswith(bos):
            text = text[len(bos):]
        return Prompt(list(context) + runner.tokenize(text, add_special=False), in_think)
    return Prompt(runner.tokenize(text, add_special=not (bos and text.startswith(bos))), in_think)


def check_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Ollama/OpenAI ``tools``: a list of ``{"type": "function", "function": {"name": str, ...}}``; else 400."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad_request("tools must be a list")
    if len(tools) > MAX_TOOLS:
        raise bad_request(f"at most {MAX_TOOLS} tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request(f"tools[{i}] must be an object with a function object that has a string name")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise bad_request(f"tools[{i}].function.parameters must be an object")
    return tools or None


MAX_TOOLS = 1024
MAX_MESSAGES = 4096


def check_messages(messages: list[Any]) -> None:
    if len(messages) > MAX_MESSAGES:
        raise bad_request(f"{len(messages)} messages: at most {MAX_MESSAGES} in one request")


CHARS_PER_TOKEN = 64   # no vocabulary's tokens average more: longer text cannot fit the context


def max_prompt_chars(runner: Runner) -> int:
    return max(CHARS_PER_TOKEN * runner.n_ctx, 1 << 16)


def check_text(runner: Runner, text: str) -> None:
    """400 before tokenizing text that cannot fit the context (tokenizing it would be wasted work)."""
    if len(text) > max_prompt_chars(runner):
        raise bad_request(f"prompt of {len(text)} characters cannot fit the context of {runner.n_ctx} tokens "
                          "(raise num_ctx)")


def tokenize(runner: Runner, text: str, add_special: bool) -> list[int]:
    check_text(runner, text)
    return runner.tokenize(text, add_special=add_special)


def check_features(name: str, template: ChatTemplate, tools: list | None, think: Any) -> None:
    """Ollama's 400s for tools / thinking on a model whose template has no place for them."""
    if tools and not template.supports_tools:
        raise bad_request(f"{name} does not support tools")
    if think and not template.supports_thinking:
        raise bad_request(f"\"{name}\" does not support thinking")

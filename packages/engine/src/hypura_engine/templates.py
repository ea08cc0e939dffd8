"""Chat templates: the model's own `tokenizer.chat_template`, rendered with jinja2's sandbox.

Models whose GGUF carries no template (the embedded Gemma 3 270M is one) get a built-in template
for their architecture family; anything else falls back to ChatML.

Templates may come from a request (Ollama's ``template``), so rendering is bounded: the sandbox refuses
to build a string or list longer than `MAX_VALUE` (``'a' * 10**9``, growing ``replace``/``indent``/widths,
a namespace or macro argument doubled in a loop), integer powers with huge exponents, and stops a render
that runs longer than `RENDER_TIMEOUT_S` (a timer raises in the rendering thread: pure-Python loops are
interrupted too) or writes more than its ``max_chars``. Every failure is a ValueError with a message.
"""
from __future__ import annotations

import ctypes
import functools
import json
import re
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_VALUE = 1 << 24          # characters in one string (items in one list) a template may build
MAX_OUTPUT = 1 << 24         # characters a render may write (the caller may ask for fewer)
MAX_INT_ARG = 1 << 20        # integer arguments of filters and string methods (widths, counts)
RENDER_TIMEOUT_S = 10.0
_WIDE = re.compile(r"\d{7,}|\*")   # a format width of a million or more, or one taken from the arguments

GEMMA = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
BUILTIN = {"gemma": GEMMA, "gemma2": GEMMA, "gemma3": GEMMA}


def _raise(message: str) -> None:
    raise TemplateError(message)


def _limit(message: str) -> TemplateError:
    return TemplateError(f"template limit: {message}")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_VALUE:
        raise _limit(f"a value of {len(value)} items (at most {MAX_VALUE})")
    return value


def _check_int_args(args: Any) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise _limit(f"integer argument {a} (at most {MAX_INT_ARG})")


def _grown_size(s: str, name: str, args: tuple, kwargs: dict) -> int:
    """The length a growing string operation would produce, computed before doing it."""
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        n = s.count(args[0]) if args[0] else len(s) + 1
        return len(s) + n * max(len(args[1]) - len(args[0]), 0)
    if name == "indent":
        width = kwargs.get("width", args[0] if args else 4)
        return len(s) + (s.count("\n") + 1) * (len(width) if isinstance(width, str) else int(width))
    if name == "expandtabs":
        return len(s) + s.count("\t") * int(kwargs.get("tabsize", args[0] if args else 8))
    if name in ("format", "format_map") and _WIDE.search(s):
        raise _limit("a format width of a million or more (or a * width)")
    return 0


class _BoundedNamespace(Namespace):
    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, _check_size(value))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with size limits on the operations that can build huge values from small input."""
    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_VALUE:
                    raise _limit(f"repeating {len(seq)} items {n} times")
        elif operator == "**":
            if isinstance(right, int) and isinstance(left, int) and abs(left) > 1 and abs(right) > 4096:
                raise _limit(f"integer power with exponent {right}")
        elif operator == "%" and isinstance(left, str):
            if _WIDE.search(left):
                raise _limit("a format width of a million or more (or a * width)")
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_int_args(args)
        _check_int_args(kwargs.values())
        for a in (*args, *kwargs.values()):
            _check_size(a)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and _grown_size(owner, getattr(__obj, "__name__", ""), args, kwargs) > MAX_VALUE:
            raise _limit(f"str.{__obj.__name__} would build more than {MAX_VALUE} characters")
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def _bounded_filter(name: str, f: Any) -> Any:
    skip = 2 if hasattr(f, "jinja_pass_arg") else 1      # (context/env,) value, then the filter's arguments

    @functools.wraps(f)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_int_args(args[skip:])
        _check_int_args(kwargs.values())
        value = args[skip - 1] if len(args) >= skip else None
        if isinstance(value, str) and _grown_size(value, name, args[skip:], kwargs) > MAX_VALUE:
            raise _limit(f"the {name} filter would build more than {MAX_VALUE} characters")
        return _check_size(f(*args, **kwargs))
    return bounded


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 64):
        raise _limit("tojson indent must be an integer from 0 to 64")
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _env() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = _BoundedNamespace
    env.globals.pop("lipsum", None)       # lipsum(n=10**6): megabytes from one call
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}  # type: ignore[assignment]
    return env


class _RenderTimeout(BaseException):
    """Raised in the rendering thread by its timer (a BaseException: no template code catches it)."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise `_RenderTimeout` in this thread if the block runs longer than `seconds`."""
    tid, lock, active = threading.get_ident(), threading.Lock(), [True]

    def fire() -> None:
        with lock:
            if active[0]:
                _set_async_exc(tid, _RenderTimeout)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            active[0] = False
            _clear_async_exc(tid, None)   # one raised but not yet delivered: drop it
        timer.cancel()


_ENV = _env()


class ChatTemplate:
    """A compiled chat template plus the special tokens it may reference."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", builtin: bool = False) -> None:
        self.source = source
        self.builtin = builtin
        self.bos_token = bos_token
        self.eos_token = eos_token
        if not isinstance(source, str):
            raise ValueError("a chat template must be a string")
        try:
            self._template = _ENV.from_string(source)
        except TemplateError as exc:     # TemplateSyntaxError: the caller's template is at fault
            raise ValueError(f"chat template does not compile: {exc}") from None
        except RecursionError:
            raise ValueError("chat template does not compile: nested too deeply") from None

    @classmethod
    def for_model(cls, template: str | None, arch: str, bos_token: str, eos_token: str) -> ChatTemplate:
        if template:
            return cls(template, bos_token, eos_token)
        return cls(BUILTIN.get(arch, CHATML), bos_token, eos_token, builtin=True)

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.source

    @property
    def supports_thinking(self) -> bool:
        return "enable_thinking" in self.source or "<think>" in self.source

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict] | None = None, think: bool | None = None, max_chars: int = MAX_OUTPUT,
               timeout_s: float = RENDER_TIMEOUT_S) -> str:
        """Render messages ({role, content, tool_calls?}) to the prompt text, writing at most `max_chars`
        characters within `timeout_s` seconds. Raises ValueError (the template failed or hit a limit)."""
        msgs = [{**m, "content": m.get("content") or ""} for m in messages]
        kwargs: dict[str, Any] = {"messages": msgs, "add_generation_prompt": add_generation_prompt,
                                  "bos_token": self.bos_token, "eos_token": self.eos_token}
        if tools:
            kwargs["tools"] = tools
        if think is not None:
            kwargs["enable_thinking"] = think
        max_chars = min(max_chars, MAX_OUTPUT)
        try:
            with _time_limit(timeout_s):
                out, n = [], 0
                for piece in self._template.generate(**kwargs):
                    n += len(piece)
                    if n > max_chars:
                        raise _limit(f"the rendered prompt exceeds {max_chars} characters")
                    out.append(piece)
                return "".join(out)
        except _RenderTimeout:
            raise ValueError(f"chat template failed: rendering took more than {timeout_s:g} s") from None
        except TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from None
        except RecursionError:
            raise ValueError("chat template failed: recursion too deep") from None
        except (TypeError, ArithmeticError, AttributeError, LookupError, ValueError) as exc:
            raise ValueError(f"chat template failed: {type(exc).__name__}: {exc}") from None

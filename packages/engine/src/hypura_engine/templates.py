"""Chat templates: the model's own `tokenizer.chat_template`, rendered with jinja2's sandbox.

Models whose GGUF carries no template (the embedded Gemma 3 270M is one) get a built-in template
for their architecture family; anything else falls back to ChatML.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda v, indent=None, ensure_ascii=False: json.dumps(v, indent=indent,
                                                                                ensure_ascii=ensure_ascii)
    return env


_ENV = _env()


class ChatTemplate:
    """A compiled chat template plus the special tokens it may reference."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", builtin: bool = False) -> None:
        self.source = source
        self.builtin = builtin
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _ENV.from_string(source)

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
               tools: list[dict] | None = None, think: bool | None = None) -> str:
        """Render messages ({role, content, tool_calls?}) to the prompt text. Raises ValueError."""
        msgs = [{**m, "content": m.get("content") or ""} for m in messages]
        kwargs: dict[str, Any] = {"messages": msgs, "add_generation_prompt": add_generation_prompt,
                                  "bos_token": self.bos_token, "eos_token": self.eos_token}
        if tools:
            kwargs["tools"] = tools
        if think is not None:
            kwargs["enable_thinking"] = think
        try:
            return self._template.render(**kwargs)
        except TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from exc

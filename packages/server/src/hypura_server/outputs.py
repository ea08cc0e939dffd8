"""Turning generated text into Ollama's message fields: ``thinking``, ``content``, ``tool_calls``.

`OutputParser` is fed the text pieces as they are generated and returns what may be sent now;
text that may still turn out to be a tool call or a think tag is held back until it is decided.
"""
from __future__ import annotations

import json
import re
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_TOOL_PREFIXES = ("<tool_call>", "[TOOL_CALLS]", "{", "[", "```json", "<|python_tag|>")
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def _call(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return {"function": {"name": name, "arguments": args}}


def parse_tool_calls(text: str, names: set[str] | None = None) -> list[dict[str, Any]] | None:
    """Tool calls in a model's whole reply — Hermes/Qwen ``<tool_call>{..}</tool_call>``, Mistral
    ``[TOOL_CALLS][..]``, Llama 3 ``{"name", "parameters"}`` / a JSON list of them — or None.
    With `names`, only calls of known tools count."""
    body = text.strip()
    for prefix in ("<|python_tag|>", "[TOOL_CALLS]"):
        body = body.removeprefix(prefix).strip()
    if body.startswith("```json") and body.endswith("```"):
        body = body[7:-3].strip()
    candidates: list[Any] = []
    if "<tool_call>" in body:
        for m in _HERMES.finditer(body):
            try:
                candidates.append(json.loads(m.group(1)))
            except ValueError:
                return None
    else:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        candidates = parsed if isinstance(parsed, list) else [parsed]
    calls = [_call(c) for c in candidates]
    if not calls or any(c is None for c in calls):
        return None
    if names is not None and any(c["function"]["name"] not in names for c in calls):  # type: ignore[index]
        return None
    return calls  # type: ignore[return-value]


class OutputParser:
    """Splits streamed text into (content, thinking) deltas and, when tools are offered, tool calls."""

    def __init__(self, think: bool, in_think: bool = False, tools: list[dict] | None = None) -> None:
        self.think = think or in_think
        self.in_think = in_think
        fns = [t.get("function") for t in tools or [] if isinstance(t, dict)]
        self.tool_names = {f["name"] for f in fns if isinstance(f, dict) and isinstance(f.get("name"), str)}
        self.tools = bool(tools)
        self._buf = ""          # text not yet classified
        self.content = ""       # all content (for tool-call parsing at the end)
        self._held = ""         # content held back while it may be a tool call
        self._deciding = self.tools
        self._seen_content = False
        self.tool_calls: list[dict[str, Any]] | None = None

    def feed(self, piece: str, final: bool = False) -> tuple[str, str]:
        """Add generated text; returns ``(content, thinking)`` safe to send now."""
        self._buf += piece
        content, thinking = "", ""
        while self._buf:
            if self.in_think:
                i = self._buf.find(THINK_CLOSE)
                if i >= 0:
                    thinking += self._buf[:i]
                    self._buf = self._buf[i + len(THINK_CLOSE):].lstrip("\n")
                    self.in_think = False
                    continue
                keep = 0 if final else _held_suffix(self._buf, THINK_CLOSE)
                thinking += self._buf[: len(self._buf) - keep]
                self._buf = self._buf[len(self._buf) - keep:]
                break
            if self.think and not self._seen_content:
                stripped = self._buf.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self._buf = stripped[len(THINK_OPEN):]
                    self.in_think = True
                    continue
                if not final and THINK_OPEN.startswith(stripped):
                    break
            content += self._buf
            self._buf = ""
        if content.strip():
            self._seen_content = True
        return self._content(content, final), thinking

    def _content(self, text: str, final: bool) -> str:
        self.content += text
        if not self._deciding:
            return text
        self._held += text
        head = self._held.lstrip()
        if not head and not final:
            return ""
        if any(head.startswith(p) or p.startswith(head) for p in _TOOL_PREFIXES) and not final:
            return ""   # may be a tool call: decide at the end
        if final and head:
            calls = parse_tool_calls(self._held, self.tool_names or None)
            if calls is not None:
                self.tool_calls = calls
                self._held = ""
                return ""
        self._deciding = False
        out, self._held = self._held, ""
        return out

    def finish(self) -> tuple[str, str]:
        """Flush what is held back; after this `tool_calls` is final."""
        return self.feed("", final=True)

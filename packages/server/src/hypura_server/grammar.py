"""Ollama's ``format`` (``"json"`` or a JSON schema) → a GBNF grammar for llama.cpp's grammar sampler.

The subset covers what structured-output clients send: objects with properties (emitted in schema
order; optional properties are emitted too, which the schema allows), arrays (``items``, ``minItems``,
``maxItems``), strings (``minLength``/``maxLength``), numbers, integers, booleans, null, ``enum``,
``const``, ``anyOf``/``oneOf``, type lists and local ``$ref``s. Unsupported keywords (``pattern``,
``format``, numeric ranges) are not enforced.

A schema comes from a request, so the converter checks its shape (``{"enum": 5}``, ``{"properties": [1]}``
→ ValueError, which the API reports as 400) and bounds the work: nesting depth, alternatives per
``enum``/``anyOf``, repetition counts (llama.cpp expands ``x{0,N}`` into N rules), the grammar's size, and
``$ref`` cycles that consume nothing (``{"$ref": "#/$defs/A"}`` where A is itself a ``$ref`` or an
``anyOf`` starting with it: left recursion, which llama.cpp refuses only after the request started).
"""
from __future__ import annotations

import json
import re
from typing import Any

PRIMITIVES = {
    "ws": r'| " " | "\n" [ \t]{0,20}',
    "value": "object | array | string | number | boolean | null",
    "object": r'"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws',
    "array": r'"[" ws ( value ( "," ws value )* )? "]" ws',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "string": r'"\"" char* "\"" ws',
    "integer": r'"-"? ( [0-9] | [1-9] [0-9]{0,15} ) ws',
    "number": r'"-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9] [1-9]{0,15} )? ws',
    "boolean": r'( "true" | "false" ) ws',
    "null": r'"null" ws',
}
_DEPS = {"value": ("object", "array", "string", "number", "boolean", "null"), "object": ("string", "value"),
         "array": ("value",), "string": ("char",)}


MAX_DEPTH = 64
MAX_ALTERNATIVES = 1024
MAX_REPEAT = 4096              # minLength/maxLength/minItems/maxItems
MAX_GRAMMAR = 128 << 10        # characters of GBNF


def _literal(value: Any) -> str:
    """A GBNF string literal matching the JSON text of `value`."""
    return json.dumps(json.dumps(value, ensure_ascii=False), ensure_ascii=False)


class _Converter:
    def __init__(self, root_schema: dict[str, Any]) -> None:
        self.root = root_schema
        self.rules: dict[str, str] = {}
        self._refs: dict[str, str] = {}
        self._pending: set[str] = set()   # $refs entered since the last consumed character (left recursion)
        self._depth = 0
        self._size = 0
        self._names: dict[str, int] = {}

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]
            for dep in _DEPS.get(name, ()):
                self.primitive(dep)
            self.primitive("ws")
        return name

    def add(self, hint: str, body: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint[-48:]).strip("-") or "r"
        name, i = base, self._names.get(base, 1)
        while name in self.rules or name in PRIMITIVES:
            i += 1
            name = f"{base}{i}"
        self._names[base] = i
        self.rules[name] = body
        self._grow(len(name) + len(body))
        return name

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > MAX_GRAMMAR:
            raise ValueError(f"the format schema makes a grammar of more than {MAX_GRAMMAR} characters")

    def ref(self, ref: str) -> str:
        if not isinstance(ref, str):
            raise ValueError("$ref must be a string")
        if ref in self._pending:
            raise ValueError(f"$ref {ref!r} refers to itself before any content (left recursion)")
        if ref in self._refs:
            return self._refs[ref]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, not {ref!r}")
        target: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise ValueError(f"unresolvable $ref {ref!r}")
            target = target[part]
        name = self.add("ref-" + ref.rsplit("/", 1)[-1], "")
        self._refs[ref] = name
        self._pending.add(ref)
        try:
            self.rules[name] = body = self.visit(target, name)
        finally:
            self._pending.discard(ref)
        self._grow(len(body))
        return name

    def visit(self, schema: Any, hint: str) -> str:
        """The GBNF expression for `schema` (a rule name or an inline alternation)."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ValueError(f"the format schema is nested more than {MAX_DEPTH} levels deep")
            expr = self._visit(schema, hint)
        finally:
            self._depth -= 1
        self._grow(len(expr))
        return expr

    def _consuming(self, build: Any, *args: Any) -> str:
        """Build an object/array rule: its parts follow a consumed ``{``/``[``, so a $ref there is no
        left recursion."""
        pending, self._pending = self._pending, set()
        try:
            return build(*args)
        finally:
            self._pending = pending

    def _alternatives(self, schema: dict[str, Any], key: str) -> list[Any]:
        alts = schema[key]
        if not isinstance(alts, list) or not alts:
            raise ValueError(f"{key} must be a non-empty list")
        if len(alts) > MAX_ALTERNATIVES:
            raise ValueError(f"{key} has {len(alts)} entries (at most {MAX_ALTERNATIVES})")
        return alts

    def _visit(self, schema: Any, hint: str) -> str:
        if schema is True or schema == {} or schema is None:
            return self.primitive("value")
        if not isinstance(schema, dict):
            raise ValueError("a JSON schema must be an object")
        if "$ref" in schema:
            return self.ref(schema["$ref"])
        if "const" in schema:
            self.primitive("ws")
            return f"{_literal(schema['const'])} ws"
        if "enum" in schema:
            self.primitive("ws")
            alts = self._alternatives(schema, "enum")
            return "( " + " | ".join(_literal(v) for v in alts) + " ) ws"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alts = [self.rule_for(s, f"{hint}-{i}") for i, s in enumerate(self._alternatives(schema, key))]
                return " | ".join(alts)
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind or len(kind) > 8 or not all(isinstance(k, str) for k in kind) or "type" in kind:
                raise ValueError("type must be a string or a short list of type names")
            return " | ".join(self.rule_for({**schema, "type": k}, f"{hint}-{k}") for k in kind)
        if kind is not None and not isinstance(kind, str):
            raise ValueError("type must be a string or a list of type names")
        if kind == "object" or (kind is None and "properties" in schema):
            return self._consuming(self.object, schema, hint)
        if kind == "array":
            return self._consuming(self.array, schema, hint)
        if kind == "string" and ("minLength" in schema or "maxLength" in schema):
            self.primitive("char")
            lo, hi = _bounds(schema, "minLength", "maxLength")
            return f'"\\"" char{{{lo},{"" if hi is None else hi}}} "\\"" ws'
        if kind in ("string", "number", "integer", "boolean", "null"):
            return self.primitive(kind)
        if kind is None:
            return self.primitive("value")
        raise ValueError(f"unsupported JSON schema type {kind!r}")

    def rule_for(self, schema: Any, hint: str) -> str:
        expr = self.visit(schema, hint)
        return expr if re.fullmatch(r"[a-zA-Z0-9-]+", expr) else self.add(hint, expr)

    def object(self, schema: dict[str, Any], hint: str) -> str:
        props = schema.get("properties") or {}
        if not isinstance(props, dict):
            raise ValueError("properties must be an object of schemas")
        if not props:
            return self.primitive("object")
        self.primitive("ws")
        parts = []
        for i, (key, sub) in enumerate(props.items()):
            value = self.rule_for(sub, f"{hint}-{key}")
            parts.append(('"," ws ' if i else "") + f"{_literal(key)} ws \":\" ws {value}")
        return '"{" ws ' + " ".join(parts) + ' "}" ws'

    def array(self, schema: dict[str, Any], hint: str) -> str:
        item = self.rule_for(schema.get("items", {}), f"{hint}-item")
        self.primitive("ws")
        lo, hi = _bounds(schema, "minItems", "maxItems")
        if hi == 0:
            return '"[" ws "]" ws'
        rest_hi = "" if hi is None else str(max(hi - 1, 0))
        rest = f'( "," ws {item} ){{{max(lo - 1, 0)},{rest_hi}}}'
        body = f"{item} {rest}"
        return f'"[" ws {body if lo > 0 else "( " + body + " )?"} "]" ws'


def _bounds(schema: dict[str, Any], lo_key: str, hi_key: str) -> tuple[int, int | None]:
    """(minimum, maximum or None) of a length/count pair: integers from 0 to MAX_REPEAT, min ≤ max."""
    out = []
    for key in (lo_key, hi_key):
        v = schema.get(key)
        if v is None:
            out.append(None)
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_REPEAT:
            raise ValueError(f"{key} must be an integer from 0 to {MAX_REPEAT}")
        out.append(v)
    lo, hi = out[0] or 0, out[1]
    if hi is not None and lo > hi:
        raise ValueError(f"{lo_key} is larger than {hi_key}")
    return lo, hi


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """A GBNF grammar (root rule ``root``) for JSON documents matching `schema`. Raises ValueError."""
    conv = _Converter(schema)
    conv.rules["root"] = ""
    conv.rules["root"] = conv.visit(schema, "root")
    return "\n".join(f"{name} ::= {body}" for name, body in conv.rules.items()) + "\n"


def format_grammar(fmt: Any) -> str | None:
    """Ollama's ``format`` field → a grammar: ``""``/None → None, ``"json"`` → any JSON object,
    a schema object → that schema. Raises ValueError for anything else."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return schema_to_gbnf({"type": "object"})
    if isinstance(fmt, dict):
        return schema_to_gbnf(fmt)
    raise ValueError(f"invalid format {fmt!r}: use \"json\" or a JSON schema object")

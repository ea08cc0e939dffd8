"""Ollama's ``format`` (``"json"`` or a JSON schema) → a GBNF grammar for llama.cpp's grammar sampler.

The subset covers what structured-output clients send: objects with properties (emitted in schema
order; optional properties are emitted too, which the schema allows), arrays (``items``, ``minItems``,
``maxItems``), strings (``minLength``/``maxLength``), numbers, integers, booleans, null, ``enum``,
``const``, ``anyOf``/``oneOf``, type lists and local ``$ref``s. Unsupported keywords (``pattern``,
``format``, numeric ranges) are not enforced.
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


def _literal(value: Any) -> str:
    """A GBNF string literal matching the JSON text of `value`."""
    return json.dumps(json.dumps(value, ensure_ascii=False), ensure_ascii=False)


class _Converter:
    def __init__(self, root_schema: dict[str, Any]) -> None:
        self.root = root_schema
        self.rules: dict[str, str] = {}
        self._refs: dict[str, str] = {}

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]
            for dep in _DEPS.get(name, ()):
                self.primitive(dep)
            self.primitive("ws")
        return name

    def add(self, hint: str, body: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-") or "r"
        name, i = base, 1
        while name in self.rules or name in PRIMITIVES:
            i += 1
            name = f"{base}{i}"
        self.rules[name] = body
        return name

    def ref(self, ref: str) -> str:
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
        self.rules[name] = self.visit(target, name)
        return name

    def visit(self, schema: Any, hint: str) -> str:
        """The GBNF expression for `schema` (a rule name or an inline alternation)."""
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
            return "( " + " | ".join(_literal(v) for v in schema["enum"]) + " ) ws"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alts = [self.rule_for(s, f"{hint}-{i}") for i, s in enumerate(schema[key])]
                return " | ".join(alts)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self.rule_for({**schema, "type": k}, f"{hint}-{k}") for k in kind)
        if kind == "object" or (kind is None and "properties" in schema):
            return self.object(schema, hint)
        if kind == "array":
            return self.array(schema, hint)
        if kind == "string" and ("minLength" in schema or "maxLength" in schema):
            self.primitive("char")
            lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
            return f'"\\"" char{{{lo},{"" if hi is None else int(hi)}}} "\\"" ws'
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
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        if hi is not None and int(hi) == 0:
            return '"[" ws "]" ws'
        rest_hi = "" if hi is None else str(max(int(hi) - 1, 0))
        rest = f'( "," ws {item} ){{{max(lo - 1, 0)},{rest_hi}}}'
        body = f"{item} {rest}"
        return f'"[" ws {body if lo > 0 else "( " + body + " )?"} "]" ws'


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

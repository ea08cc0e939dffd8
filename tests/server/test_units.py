"""Pieces that need no model: durations, grammars, tool-call and think parsing, the FIFO lock."""
from __future__ import annotations

import json
import threading
import time

import pytest

from hypura_server.durations import FOREVER, parse_keep_alive
from hypura_server.errors import APIError
from hypura_server.grammar import format_grammar, schema_to_gbnf
from hypura_server.manager import FairLock
from hypura_server.models_api import _parse_modelfile
from hypura_server.outputs import OutputParser, parse_tool_calls
from hypura_server.wsgi import is_loopback


@pytest.mark.parametrize("value,seconds", [(None, 300), (0, 0), ("0", 0), (10, 10), ("5m", 300),
                                           ("1h30m", 5400), ("1.5s", 1.5), ("-1", FOREVER), (-5, FOREVER),
                                           ("300ms", 0.3), ("-1m", FOREVER)])
def test_keep_alive(value, seconds):
    assert parse_keep_alive(value, 300) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 parsecs", "m", True, [1], "1x"])
def test_keep_alive_rejects(bad):
    with pytest.raises(APIError):
        parse_keep_alive(bad, 300)


def test_grammars_are_well_formed():
    g = schema_to_gbnf({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "kind": {"enum": ["a", 1, None]}, "x": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "ref": {"$ref": "#/$defs/P"}}, "$defs": {"P": {"type": "object", "properties": {"ok": {"const": True}}}}})
    rules = dict(line.split(" ::= ", 1) for line in g.strip().splitlines())
    assert rules["root"].startswith('"{" ws "\\"name\\""')
    used = {tok for body in rules.values() for tok in body.split() if tok.replace("-", "").isalnum()}
    assert used <= set(rules) | {"ws"}, used - set(rules)   # every referenced rule is defined
    assert format_grammar(None) is None and "root ::= object" in format_grammar("json")
    with pytest.raises(ValueError):
        format_grammar("yaml")


def test_tool_call_formats():
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert parse_tool_calls(hermes) == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    llama = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    assert parse_tool_calls(llama)[0]["function"]["arguments"] == {"city": "Oslo"}
    mistral = '[TOOL_CALLS][{"name": "a", "arguments": "{\\"x\\": 1}"}, {"name": "b", "arguments": {}}]'
    assert [c["function"]["name"] for c in parse_tool_calls(mistral)] == ["a", "b"]
    assert parse_tool_calls('{"a": 1}') is None and parse_tool_calls("hello") is None
    assert parse_tool_calls(llama, names={"other"}) is None


def test_output_parser_streams_content_and_holds_tool_calls():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    p = OutputParser(think=False, tools=tools)
    assert [p.feed(x) for x in ["Sunny", " today"]] == [("Sunny", ""), (" today", "")]
    p = OutputParser(think=False, tools=tools)
    sent = [p.feed(x) for x in ['<tool_call>{"name": "get_weather", ', '"arguments": {"city": "Rome"}}</tool_call>']]
    assert sent == [("", ""), ("", "")] and p.finish() == ("", "")
    assert p.tool_calls[0]["function"]["arguments"] == {"city": "Rome"}
    p = OutputParser(think=False, tools=tools)
    p.feed('{"not": "a call"}')
    assert p.finish() == ('{"not": "a call"}', "") and p.tool_calls is None


def test_output_parser_splits_thinking():
    p = OutputParser(think=True)
    out = [p.feed(x) for x in ["<thi", "nk>let me", " see</thi", "nk>\n\nAnswer", "."]] + [p.finish()]
    assert "".join(t for _, t in out) == "let me see"
    assert "".join(c for c, _ in out) == "Answer."
    p = OutputParser(think=True, in_think=True)   # the template opened <think> itself
    out = [p.feed("hmm</think>ok")] + [p.finish()]
    assert out[0] == ("ok", "hmm")


def test_fair_lock_serves_in_arrival_order():
    lock, order = FairLock(), []
    assert lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        while lock.waiting < i + 1:
            time.sleep(0.001)
    cancel = threading.Event()
    cancel.set()
    assert lock.acquire(cancel) is False          # a cancelled waiter gives up and leaves the queue
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4] and lock.waiting == 0


def test_modelfile_parsing():
    spec = _parse_modelfile('FROM ./m.gguf\nSYSTEM """Be brief."""\nPARAMETER temperature 0.2\n'
                            'PARAMETER stop "<end>"\nPARAMETER stop "###"\n')
    assert spec["from"] == "./m.gguf" and spec["system"] == "Be brief."
    assert spec["parameters"] == {"temperature": 0.2, "stop": ["<end>", "###"]}


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_json_dumps_of_grammar_literals():
    g = schema_to_gbnf({"enum": ['say "hi"', "ünï"]})
    assert json.dumps('say "hi"') in g.replace('\\"', '"') or '\\"say' in g


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e308, "nan", "inf", 10 ** 30,
                                 "9" * 100 + "h"])
def test_keep_alive_must_be_finite_and_bounded(bad):
    with pytest.raises(APIError):
        parse_keep_alive(bad, 300)


def test_modelfile_parser_is_linear_and_handles_multiline_quotes():
    spec = _parse_modelfile('FROM m\nTEMPLATE """a\nb"""\n  SYSTEM """x"""\n# c\nPARAMETER top_k 5')
    assert spec["template"] == "a\nb" and spec["system"] == "x" and spec["parameters"] == {"top_k": 5}
    t0 = time.perf_counter()
    assert _parse_modelfile("FROM m\n" + "\n" * 200000 + "!" + " " * 200000)["from"] == "m"
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(APIError):
        _parse_modelfile('FROM m\nTEMPLATE """never closed\nPARAMETER top_k 5\n')


def test_host_rule_like_ollama():
    from hypura_server.app import host_allowed

    for host in ("localhost", "localhost:11434", "127.0.0.1:1", "[::1]:80", "10.0.0.5", "0.0.0.0", "a.localhost",
                 "box.local", "svc.internal", ""):
        assert host_allowed(host, []), host
    for host in ("evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "[2606:4700::1]", "8.8.8.8"):
        assert not host_allowed(host, []), host
    assert host_allowed("evil.example", ["*.example"]) and host_allowed("x.y", ["*"])


@pytest.mark.parametrize("schema", [{"enum": 5}, {"anyOf": 5}, {"properties": [1]}, {"$ref": 5}, {"oneOf": []},
                                    {"type": "string", "maxLength": 10 ** 9}, {"type": ["string", 5]},
                                    {"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"},
                                    {"enum": list(range(5000))}])
def test_schema_shapes_are_value_errors(schema):
    with pytest.raises(ValueError):
        format_grammar(schema)


def test_recursive_schema_through_an_object_is_fine():
    g = format_grammar({"$defs": {"T": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}}}, "$ref": "#/$defs/T"})
    assert "ref-T ::=" in g


@pytest.mark.parametrize("source", ["{{ 'a' * 10 ** 9 }}", "{{ 'x'|center(10 ** 8) }}", "{{ 2 ** 100000000 }}",
                                    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                                    "{% endfor %}", "{{ lipsum(n=10 ** 5) }}", "{% if %}",
                                    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"])
def test_template_limits(source):
    from hypura_engine import ChatTemplate

    t0 = time.perf_counter()
    with pytest.raises(ValueError):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}], timeout_s=1.0)
    assert time.perf_counter() - t0 < 3.0


def test_template_output_cap_and_normal_render():
    from hypura_engine import ChatTemplate

    t = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert t.render([{"role": "user", "content": "hi"}] * 3) == "hihihi"
    with pytest.raises(ValueError, match="exceeds"):
        t.render([{"role": "user", "content": "x" * 100}] * 10, max_chars=500)

"""`hypura run` with no prompt on a real terminal (a pty: Ctrl-C is the line discipline's SIGINT) on the real
default model: the chat of ``ollama run`` — its prompt, help, multi-line input, /set and /show, history within
the session, Ctrl-C stopping an answer and the chat going on — without a server and against one."""
from __future__ import annotations

import re
import time

import pytest
from cli_support import Tty, free_port, isolated_env, running_server

from hypura.client import Client

ANSWER = r"\n(?P<answer>(?:.|\n)*?)\n\n>>> "   # what streams after the echoed line, up to the next prompt


def _answer(t: Tty, line: str, timeout: float = 240.0) -> str:
    """Type `line`; the answer streamed after its echo."""
    t.line(line)
    t.expect(re.escape(line) + r"\n", timeout)
    t.pos -= 1
    return t.expect(ANSWER, timeout).group("answer")


def _interrupt_an_answer(t: Tty) -> str:
    """Ask for an endless answer, press Ctrl-C once text streams; the prompt must come back at once."""
    t.line("/set parameter num_predict 100000")
    t.expect(r"Set parameter 'num_predict' to '100000'\n>>> ")
    t.line("Count from one to one thousand, in words.")
    t.expect(r"in words\.\n\S")          # the first piece of the answer is on the screen
    t.send("\x03")
    t.expect(r"\^C\n>>> ", 60)           # the answer stopped; the chat did not end
    assert t.proc.poll() is None
    assert "Use Ctrl + d" not in t.text[t.pos - 200:]   # it was the answer that was stopped, not the prompt
    return t.text


def test_chat_without_a_server(tmp_path):
    env = isolated_env(tmp_path, f"127.0.0.1:{free_port()}")
    t = Tty(["run", "-n", "12"], env)   # -n given: it becomes the chat's num_predict (the others stay unset)
    try:
        t.expect(r"no server at http://127\.0\.0\.1:\d+: running gemma3:270m in this process", 120)
        t.expect(">>> ", 240)
        t.line("/?")
        t.expect(r"  /set            Set session variables\n(?:.*\n)*  /bye            Exit\n")
        t.expect('Use """ to begin a multi-line message.\n\n>>> ')
        t.line("/set parameter temperature 0")
        t.expect("Set parameter 'temperature' to '0'\n>>> ")
        t.line("/set parameter bogus 1")
        t.expect('Couldn\'t set parameter: "unknown parameter \'bogus\'"\n>>> ')
        t.line("/set parameter top_k many")
        t.expect("Couldn't set parameter: \"invalid int value \\[many\\]\"\n>>> ")

        assert _answer(t, "Name a color.").strip()
        t.line('"""Tell me')                       # a multi-line message: ... until a line ends with """
        t.expect(r"\n\.\.\. ")
        t.line("about")
        t.expect(r"\n\.\.\. ")
        assert _answer(t, 'the sea."""').strip()

        t.line("/show info")
        t.expect(r"  Model\n    architecture        gemma3\n")
        t.expect(r"  Hypura\n    mode                resident\n(?:.*\n)*>>> ")
        t.line("/show parameters")
        t.expect(r"User defined parameters:\n(?:  \w+ +\S+\n)+")
        t.line("/show nonsense")
        t.expect("Unknown command '/show nonsense'. Type /\\? for help\n>>> ")
        t.line("/set nowordwrap")
        t.expect("Set 'nowordwrap' mode.\n>>> ")
        t.line("/set wordwrap")
        t.expect("Set 'wordwrap' mode.\n>>> ")
        t.line("/frobnicate")
        t.expect("Unknown command '/frobnicate'. Type /\\? for help\n>>> ")

        _interrupt_an_answer(t)
        t.line("/set parameter num_predict 6")
        t.expect(">>> ")
        assert _answer(t, "Say hi.").strip()      # the chat goes on after Ctrl-C
        # Ctrl-C at an empty prompt: ollama's hint, not an exit. A person's pause first: CPython's readline notices
        # a signal only when it interrupts its wait for a key, so one that lands in the microseconds between its
        # printing the prompt and that wait (what a script reacting to the prompt hits) waits for the next key
        time.sleep(0.5)
        t.send("\x03")
        t.expect(r"\nUse Ctrl \+ d or /bye to exit\.\n>>> ")
        t.line("/clear")
        t.expect("Cleared session context\n>>> ")
        t.line('/set system """You are')          # a multi-line system message
        t.expect(r"\n\.\.\. ")
        t.line('a pirate."""')
        t.expect("Set system message.\n>>> ")
        t.line("/show system")
        t.expect("You are\na pirate.\n\n>>> ")
        t.line("/save pirate")                    # the model with this system message and these parameters
        t.expect("Created new model 'pirate'\n>>> ")
        t.line("/load no-such-model")
        t.expect("Couldn't find model 'no-such-model'\n>>> ")
        t.line("/load pirate")
        t.expect("Loading model 'pirate'\n(?:.*)>>> ", 240)
        t.line("/show modelfile")
        t.expect('SYSTEM """You are\na pirate."""\n(?:.*\n)*PARAMETER num_predict 6\n')
        t.line("/bye")
        assert t.close() == 0
        assert "Traceback" not in t.text and "Error" not in t.text
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("srv"), keep_alive=300.0) as hostport:
        yield hostport


def test_chat_against_a_server_keeps_the_conversation(tmp_path, server):
    env = isolated_env(tmp_path, server)
    t = Tty(["run", "gemma3:270m", "--temp", "0", "-n", "16", "--verbose"], env)
    try:
        t.expect(">>> ", 240)
        assert "in this process" not in t.text   # the running server answers

        def turn(line: str) -> tuple[str, int]:
            """(the answer, the prompt's length in tokens) from --verbose's timings after it"""
            t.line(line)
            t.expect(re.escape(line) + r"\n", 240)
            answer = t.expect(r"(?P<a>(?:.|\n)*?)\n\ntotal duration: +\S+\n", 240).group("a")
            count = int(t.expect(r"prompt eval count: +(\d+) token\(s\)\n").group(1))
            t.expect(r"eval rate: +[\d.]+ tokens/s\nplacement: +resident \(GPU 0 B, RAM 253 MB, NVMe 0 B\)\n>>> ")
            return answer, count

        first, second = "My name is Ada. Remember it.", "What is my name?"
        a1, _ = turn(first)
        _, n2 = turn(second)
        api = Client(f"http://{server}")

        def prompt_length(messages):
            return api.request("POST", "/api/chat", {"model": "gemma3:270m", "messages": messages, "stream": False,
                                                     "options": {"num_predict": 1}})["prompt_eval_count"]
        # the second turn's prompt is the whole conversation as the terminal showed it
        assert n2 == prompt_length([{"role": "user", "content": first}, {"role": "assistant", "content": a1},
                                    {"role": "user", "content": second}])
        assert n2 > prompt_length([{"role": "user", "content": second}])

        _interrupt_an_answer(t)
        for _ in range(600):   # the worker's end of the cancelled generation reaches /api/ps (within 30 s)
            ps = api.request("GET", "/api/ps")["models"][0]["hypura"]
            if ps.get("last_done_reason") == "aborted":
                break
            time.sleep(0.05)
        assert ps["last_done_reason"] == "aborted" and ps["last_eval_count"] < 100000, ps   # the server stopped
        t.line("/set quiet")
        t.expect("Set 'quiet' mode.\n>>> ")
        t.line("/set parameter num_predict 4")
        t.expect(">>> ")
        assert _answer(t, "Thanks.").strip()   # the chat goes on after Ctrl-C
        t.send("\x04")                        # Ctrl-D leaves
        assert t.close() == 0
        assert "Traceback" not in t.text and "Error" not in t.text
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()


def test_chat_with_a_model_file_runs_it_where_it_lies(tmp_path, default_model):
    """A .gguf path: the chat serves that one file from this process (a server reads only its own store)."""
    (tmp_path / "My Model.gguf").symlink_to(default_model)
    env = isolated_env(tmp_path, f"127.0.0.1:{free_port()}")
    t = Tty(["run", str(tmp_path / "My Model.gguf"), "-n", "4"], env)
    try:
        t.expect(">>> ", 240)
        t.line("/show modelfile")
        t.expect(f"FROM {re.escape(str(default_model.resolve()))}\n")
        assert _answer(t, "Hello.").strip()
        t.send("\x04")
        assert t.close() == 0
        assert "Traceback" not in t.text and "Error" not in t.text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["My Model.gguf", "models", "ollama"]   # nothing written
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.close()

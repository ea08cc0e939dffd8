'''`hypura run [MODEL]` with no prompt on a terminal: an interactive chat, as ``ollama run`` has it.

``>>> `` reads a message (GNU readline: line editing, in-session history); ``"""`` begins and ends a
multi-line message (``... `` continues it); the answer streams token by token through ``/api/chat`` with
the whole conversation; Ctrl-C stops the answer (the connection is dropped: the server stops generating)
and the chat goes on; Ctrl-D or ``/bye`` leaves. Commands: ``/set parameter|system|verbose|quiet|format|
think|history …``, ``/show info|modelfile|parameters|system|template|license``, ``/clear``, ``/load``,
``/save``, ``/?``. The chat talks to the running server (`hypura.client`); with none — or for a model given as
a path, or placement flags (``--mode``, budgets, ``--threads``, ``--local``) that only a process of our own
can honour — it serves the API from this process for the session.
'''
from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from .client import Client, ServerError, Stream, local_server, server_url, signals_stay_with_main_thread
from .display import go_duration, human_bytes, percent
from .slash_commands import SlashCommands
from .wordwrap import WordWrap

GREY, BOLD, RESET = "\x1b[90m", "\x1b[1m", "\x1b[0m"


def add_args(p: argparse.ArgumentParser) -> None:
    """`hypura run`'s flags for the chat (and PROMPT words, as ``ollama run MODEL PROMPT``)."""
    p.add_argument("words", nargs="*", metavar="PROMPT", help="the prompt, as words after MODEL (or -p)")
    p.add_argument("--verbose", dest="chat_verbose", action="store_true", help="chat: timings after each answer")
    p.add_argument("--keepalive", default=None, help="chat: how long the model stays loaded (e.g. 5m)")
    p.add_argument("--format", default=None, help="chat: response format (json)")
    p.add_argument("--think", nargs="?", const="true", default=None, help="chat: thinking on/off (true/false)")
    p.add_argument("--hidethinking", action="store_true", help="chat: do not print the thinking")
    p.add_argument("--nowordwrap", action="store_true",
                   help="chat: do not move a word that reaches the right edge to the next line")
    p.add_argument("--local", action="store_true", help="chat: run the model in this process even if a server runs")
    p.set_defaults(run_parser=p)


def wants_chat(args: argparse.Namespace) -> bool:
    """No prompt (PROMPT words become ``args.prompt``), standard input and output both terminals."""
    if args.prompt is None and getattr(args, "words", None):
        args.prompt = " ".join(args.words)
    chat = args.prompt is None and sys.stdin.isatty() and sys.stdout.isatty()
    chat_only = (("--verbose", "chat_verbose"), ("--keepalive", "keepalive"), ("--format", "format"),
                 ("--think", "think"), ("--hidethinking", "hidethinking"), ("--local", "local"),
                 ("--nowordwrap", "nowordwrap"))
    unused = [flag for flag, dest in chat_only if not chat and _explicit(args, dest)]
    if unused:
        print(f"warning: {', '.join(unused)}: for the interactive chat only (ignored with a prompt)", file=sys.stderr)
    return chat


def _explicit(args: argparse.Namespace, dest: str) -> bool:
    return getattr(args, dest, None) != args.run_parser.get_default(dest)


def run_chat(args: argparse.Namespace) -> int:
    """The chat for `hypura run`'s parsed flags: only the flags a user gave become options."""
    options = {key: getattr(args, dest) for dest, key in (("num_predict", "num_predict"), ("temp", "temperature"),
               ("top_k", "top_k"), ("top_p", "top_p"), ("seed", "seed"), ("ctx", "num_ctx"))
               if _explicit(args, dest)}
    if args.raw:
        print("warning: --raw has no effect in the chat (it always uses the chat template)", file=sys.stderr)
    model = args.model or "gemma3:270m"
    path = Path(model).expanduser()
    is_path = model.endswith(".gguf") or path.is_file()
    placement = (args.mode != "auto" or args.gpu_budget or args.ram_budget or args.threads
                 or not getattr(args, "warm_start", True) or getattr(args, "prefetch", False)
                 or any(_explicit(args, k) for k in vars(args) if k.startswith("draft")))
    with ExitStack() as stack:
        client = Client(server_url())
        if is_path or placement or args.local or not client.alive():
            settings: dict[str, Any] = {"mode": args.mode, "gpu_budget": args.gpu_budget, "ram_budget": args.ram_budget,
                                        "ctx": args.ctx, "n_threads": args.threads}
            if is_path:
                model = _path_store(stack, path, settings)
            elif not (placement or args.local):
                print(f"{GREY}no server at {client.url}: running {model} in this process{RESET}", file=sys.stderr)
            client = stack.enter_context(local_server(**settings))
        think = None if args.think is None else args.think.lower() not in ("false", "0", "no")
        chat = Chat(client, model, options=options, system=args.system, keep_alive=args.keepalive,
                    format=args.format, think=think, hide_thinking=args.hidethinking, verbose=args.chat_verbose,
                    wordwrap=not args.nowordwrap)
        chat.load()
        return chat.loop()


def _path_store(stack: ExitStack, path: Path, settings: dict[str, Any]) -> str:
    """A model given as a file: a private models directory whose one name is that file (read where it lies)."""
    from hypura_engine import Registry
    from hypura_engine.registry import normalize

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        name = normalize(path.stem)
    except ValueError:
        name = "model:latest"
    store = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hypura-run-")))
    Registry(store).register(name, path)
    settings["models_dir"] = store
    return name


class Chat(SlashCommands):
    """One conversation with one model; `loop` reads the terminal until /bye or Ctrl-D (the ``/`` commands are
    `SlashCommands`')."""

    def __init__(self, client: Client, model: str, *, options: dict[str, Any] | None = None,
                 system: str | None = None, keep_alive: str | None = None, format: str | None = None,
                 think: bool | None = None, hide_thinking: bool = False, verbose: bool = False,
                 wordwrap: bool = True, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.client, self.model = client, model
        self.options = dict(options or {})
        self.system = system
        self.keep_alive, self.format, self.think = keep_alive, format, think
        self.hide_thinking, self.verbose, self.wordwrap = hide_thinking, verbose, wordwrap
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.messages: list[dict[str, str]] = []

    # -- the model -----------------------------------------------------------------------
    def _body(self, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, **extra}
        for key, value in (("options", self.options), ("keep_alive", self.keep_alive), ("format", self.format),
                           ("think", self.think)):
            if value not in (None, {}):
                body[key] = value
        return body

    def load(self) -> None:
        """Check the model exists and load it, as ``ollama run`` does before the first prompt."""
        self.err.write(f"{GREY}loading {self.model}...{RESET}")
        self.err.flush()
        try:
            self.client.request("POST", "/api/generate", {**self._body(), "stream": False})
        finally:
            self.err.write("\r\x1b[K")
            self.err.flush()

    def conversation(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    # -- the terminal ----------------------------------------------------------------------
    def loop(self) -> int:
        try:
            import readline
        except ImportError:  # pragma: no cover - every CPython build here has it
            readline = None
        if readline is not None and os.environ.get("OLLAMA_NOHISTORY"):
            readline.set_auto_history(False)
        buf: list[str] = []
        multiline: str | None = None   # None, "prompt" or "system"
        while True:
            try:
                line = input("... " if multiline else ">>> ")
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:
                empty = not (readline.get_line_buffer() if readline else "") and not buf
                self.out.write("\nUse Ctrl + d or /bye to exit.\n" if empty else "\n")
                buf, multiline = [], None
                continue
            try:
                buf, multiline = self._line(line, buf, multiline)
            except KeyboardInterrupt:   # Ctrl-C outside an answer (a /show request, between two steps)
                self.out.write(RESET + "\n")
                buf, multiline = [], None
            if multiline == "bye":
                return 0

    def _line(self, line: str, buf: list[str], multiline: str | None) -> tuple[list[str], str | None]:
        """One line typed at the prompt → (lines kept, multi-line state after it; "bye": leave)."""
        if multiline:
            done = line.endswith('"""')
            buf = buf + [line[:-3] if done else line]
            if not done:
                return buf, multiline
            text = "\n".join(buf)
            if multiline == "system":
                self._set_system(text)
                return [], None
        elif line.startswith('"""'):
            rest = line[3:]
            if not (rest.endswith('"""') and len(rest) >= 3):
                return [rest], "prompt"
            text = rest[:-3]
        elif line.startswith("/"):
            verdict = self.command(line)
            if isinstance(verdict, tuple):   # /set system """... : more lines to come
                return [verdict[1]], "system"
            return [], verdict
        else:
            text = line
        if text.strip():
            self.send(text)
        return [], None

    def send(self, text: str) -> None:
        """Send a user message with the conversation so far and stream the answer; Ctrl-C stops it. The
        conversation grows by the message and its answer (as far as it was shown) only once it is over."""
        user = {"role": "user", "content": text}
        pieces: queue.Queue[Any] = queue.Queue()
        content: list[str] = []
        final, thinking, stream, pump = None, False, None, None
        shown = WordWrap(self.out, shutil.get_terminal_size().columns) if self.wordwrap else self.out
        try:
            stream = self.client.stream("/api/chat", self._body(messages=self.conversation() + [user]))
            pump = threading.Thread(target=_pump, args=(stream, pieces), name="hypura-chat-stream", daemon=True)
            with signals_stay_with_main_thread():
                pump.start()
            while (item := _next(pieces)) is not None:
                if isinstance(item, BaseException):
                    raise item
                msg = item.get("message") or {}
                if msg.get("thinking") and not self.hide_thinking:
                    if not thinking:   # escape sequences straight to the terminal: they take no columns
                        self.out.write(GREY + BOLD + "Thinking..." + RESET + GREY + "\n")
                        thinking = True
                    shown.write(msg["thinking"])
                if msg.get("content"):
                    if thinking:
                        self.out.write("\n" + BOLD + "...done thinking." + RESET + "\n\n")
                        thinking = False
                    content.append(msg["content"])
                    shown.write(msg["content"])
                self.out.flush()
                if item.get("done"):
                    final = item
        except KeyboardInterrupt:
            if stream is not None:
                stream.abort()
            self.out.write(RESET + "\n")
        except ServerError as exc:
            self.out.write(RESET)
            self.err.write(f"\nError: {exc}\n")
            return
        finally:
            if pump is not None:
                pump.join(10.0)
        if content:   # an interrupted answer stays as far as it was shown: the next turn follows it
            self.messages += [user, {"role": "assistant", "content": "".join(content)}]
        if final is not None:
            self.out.write(RESET + "\n\n")
            if self.verbose:
                self._summary(final)
        self.out.flush()

    def _summary(self, r: dict[str, Any]) -> None:
        """Ollama's ``--verbose`` timings, then where the model's weights are (Hypura's plan)."""
        def rate(count: int, ns: int) -> str:
            return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "-"
        pc, pd = r.get("prompt_eval_count", 0), r.get("prompt_eval_duration", 0)
        ec, ed = r.get("eval_count", 0), r.get("eval_duration", 0)
        lines = [("total duration", go_duration(r.get("total_duration", 0))),
                 ("load duration", go_duration(r.get("load_duration", 0))),
                 ("prompt eval count", f"{pc} token(s)"), ("prompt eval duration", go_duration(pd)),
                 ("prompt eval rate", rate(pc, pd)), ("eval count", f"{ec} token(s)"),
                 ("eval duration", go_duration(ed)), ("eval rate", rate(ec, ed))]
        hy = self._placement()
        if hy:
            tiers = {t: human_bytes((hy.get("tier_bytes") or {}).get(t, 0)) for t in ("gpu", "ram", "nvme")}
            where = f"GPU {tiers['gpu']}, RAM {tiers['ram']}, NVMe {tiers['nvme']}"
            lines.append(("placement", f"{hy.get('mode')} ({where})"))
            if hy.get("expert_cache_hit_rate") is not None:
                lines.append(("expert cache hits", percent(hy["expert_cache_hit_rate"])))
        self.err.write("".join(f"{k + ':':<22}{v}\n" for k, v in lines))

    def _placement(self) -> dict[str, Any] | None:
        try:
            models = self.client.request("GET", "/api/ps").get("models", [])
        except (ServerError, AttributeError):
            return None
        full = self.model if ":" in self.model.rsplit("/", 1)[-1] else self.model + ":latest"
        return next((m.get("hypura") for m in models if m.get("name") in (self.model, full)), None)

def _next(pieces: queue.Queue) -> Any:
    """The next item, waking every 0.1 s so that a pending Ctrl-C is raised here at once."""
    while True:
        try:
            return pieces.get(timeout=0.1)
        except queue.Empty:
            pass


def _pump(stream: Stream, pieces: queue.Queue) -> None:
    try:
        for obj in stream:
            pieces.put(obj)
    except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which reports it
        pieces.put(exc)
    pieces.put(None)


__all__ = ["Chat", "add_args", "run_chat", "wants_chat"]

"""A real terminal for the CLI tests (a pty whose slave is the child's controlling terminal, so Ctrl-C is a
real SIGINT from the line discipline), a real server on loopback, and an address where none answers."""
from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
HYPURA_BIN = ROOT / ".venv" / "bin" / "hypura"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


def free_port() -> int:
    """A loopback port nothing listens on (bound and released: nothing answers there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(tmp: Path, host: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: its own models directory, an empty Ollama store, no config file, and
    HYPURA_HOST pointing at `host`."""
    models, ollama = tmp / "models", tmp / "ollama"
    models.mkdir(exist_ok=True)
    ollama.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "HYPURA_PORT")}
    env.update({"HYPURA_MODELS": str(models), "OLLAMA_MODELS": str(ollama), "HYPURA_HOST": host,
                "HYPURA_CONFIG": str(tmp / "absent.toml"), "TERM": "xterm", **extra})
    return env


class Tty:
    """`hypura ARGS` on a pseudo-terminal (stdin, stdout and stderr). `expect` waits for a regular expression
    in the output (escape sequences and carriage returns removed) and consumes it."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))

        def controlling_tty() -> None:   # a session of its own whose controlling terminal is the pty
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([str(HYPURA_BIN), *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=cwd, preexec_fn=controlling_tty, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = b""
        self.pos = 0   # expect() searches the cleaned text from here

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:   # EIO: the child closed the terminal
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = 120.0) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.text, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None
                             and not self._read(0.1)):
                raise AssertionError(f"{pattern!r} not seen (exit status {self.proc.poll()}); output after "
                                     f"position {self.pos}:\n{self.text[self.pos:][-3000:]}\n"
                                     f"raw tail: {self.raw[-400:]!r}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def close(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        while self._read(0.05):
            pass
        os.close(self.master)
        return rc


@contextmanager
def running_server(tmp: Path, **settings) -> Iterator[str]:
    """The real app on waitress on a free loopback port (its own models directory); yields ``host:port``."""
    from hypura_server import Settings, create_app, make_server

    (tmp / "srv-models").mkdir(exist_ok=True)
    (tmp / "srv-ollama").mkdir(exist_ok=True)
    conf = Settings(models_dir=tmp / "srv-models", ollama_dir=tmp / "srv-ollama", ctx=1024, host="127.0.0.1",
                    **settings)
    app = create_app(conf)
    srv = make_server(app, "127.0.0.1", 0, threads=8)
    thread = threading.Thread(target=srv.run, name="hypura-cli-test-server", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{srv.effective_port}"
    finally:
        srv.close()
        app.extensions["hypura"].manager.close()


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hypura.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, input=stdin if stdin is not None else "")

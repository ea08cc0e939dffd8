"""Helpers shared by tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import os
import subprocess
import sys

HYPURA = [sys.executable, "-m", "hypura.main"]


def run_hypura(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real `hypura` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*HYPURA, *args], capture_output=True, text=True, timeout=timeout, env=full_env, **kw)

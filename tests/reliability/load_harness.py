"""Load GGUF files with the real engine, each in a forked child, and report how each one ended.

``python load_harness.py MODE[-novalidate] FILE...`` prints one JSON line per file: exit status or signal, seconds,
peak RSS of the child, and the one-line error. A child loads the file with `hypura_engine.Runner`
(validation, then llama.cpp; MODE "auto" also runs the planner and llama.cpp's no_alloc dry run),
tokenizes and generates 2 tokens. Errors Hypura raises end the child with status 2; a llama.cpp abort
ends it with a signal — which is the bug this harness exists to find. Forking from this single-threaded
process (native library already loaded) costs milliseconds per case, so thousands of cases are cheap.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

LIMIT_S = 20
AS_LIMIT = 8 << 30        # address space cap per child: a hostile header must not take the machine


def _child(path: str, mode: str, out_fd: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    signal.alarm(LIMIT_S)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)          # llama.cpp logs (and the odd printf)
    os.dup2(devnull, 2)
    code, msg = 0, "ok"
    try:
        from hypura_engine import GenerateOptions, LoadOptions, Runner

        if mode.endswith("-novalidate"):      # negative control: let the file reach llama.cpp unchecked
            import hypura_placement

            hypura_placement.validate_gguf = lambda *a, **k: None
            mode = mode.removesuffix("-novalidate")

        r = Runner(path, LoadOptions(mode=mode, ctx=64, n_threads=1, ram_budget=1 << 30, gpu_budget=0))
        toks = r.tokenize("hello")
        with r.lock:
            for _ in r.generate(toks or [0], GenerateOptions(num_predict=2)):
                pass
        r.close()
    except (ValueError, OSError, LookupError, RuntimeError) as exc:
        code, msg = 2, f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # noqa: BLE001 - anything else is reported as a finding
        code, msg = 3, f"{type(exc).__name__}: {exc}"
    os.write(out_fd, msg.encode("utf-8", "replace")[:2000])
    os._exit(code)


def run_one(path: str, mode: str) -> dict:
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(path, mode, w)
        finally:
            os._exit(4)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    out = {"path": path, "seconds": round(time.perf_counter() - t0, 3), "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
           "message": b"".join(chunks).decode("utf-8", "replace")}
    if os.WIFSIGNALED(status):
        out["signal"] = signal.Signals(os.WTERMSIG(status)).name
    else:
        out["exit"] = os.WEXITSTATUS(status)
    return out


def main(argv: list[str]) -> int:
    mode, paths = argv[0], argv[1:]
    import hypura_engine  # noqa: F401  - load the native library once, before forking
    import hypura_llama  # noqa: F401
    for p in paths:
        print(json.dumps(run_one(p, mode)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

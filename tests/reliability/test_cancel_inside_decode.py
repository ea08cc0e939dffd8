"""A client that leaves while its long prompt is being evaluated stops that evaluation (llama.cpp's abort callback,
set from the worker's reader thread), so the model serves the next request at once instead of after the prompt
(issue 19: cancellation reaches the worker where it computes)."""
from __future__ import annotations

import json
import socket
import time

from hostile_support import served
from soak import ServeProcess, request

MODEL = "gemma3:270m"


def _long_prompt(first: str) -> str:
    return first + " " + " ".join(f"the {i} cat sat on mat {i % 7}" for i in range(380))    # ~3000 tokens


def _generate(prompt: str) -> dict:
    return {"model": MODEL, "prompt": prompt, "raw": True, "stream": True,
            "options": {"num_predict": 1, "temperature": 0, "num_ctx": 4096}}


def test_a_client_leaving_during_its_prompt_stops_the_prompts_decode(tmp_path):
    with ServeProcess(tmp_path, "--mode", "resident", "--ctx", "4096", "--threads", "2") as srv:
        assert served(srv.url, MODEL, timeout=120)[0] == 200                     # loaded
        t0 = time.perf_counter()                                               # control: nobody leaves
        status, _ = request(srv.url, "POST", "/api/generate", _generate(_long_prompt("Alpha")), timeout=120)
        full = time.perf_counter() - t0
        assert status == 200 and full > 2.0, f"the prompt took {full:.2f} s: too short to tell a stop from an end"

        body = json.dumps(_generate(_long_prompt("Beta"))).encode()            # another prompt: no KV reuse
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.4)                                                        # inside the prompt's decode
        s.close()
        t1 = time.perf_counter()
        status, _ = served(srv.url, MODEL, timeout=120)
        after = time.perf_counter() - t1
        assert status == 200
        assert after < full / 2, f"the next request waited {after:.2f} s (the whole prompt takes {full:.2f} s)"

"""Hostile GGUF files: mutated headers of real files, truncated and empty files.

Every case must end in a clear error (or a valid load) within seconds and bounded memory — in
`validate_gguf`/`inspect_model`/the planner (in process), in llama.cpp through the engine (forked
children: a signal is a finding), in `hypura run|inspect|plan` (exit status 2, one error line, no traceback)
and through the server (an HTTP error with a JSON body; the server stays up and serves good models).
The default suite runs a few hundred cases; ``-m slow`` runs tens of thousands.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gguf_mutations import header_fields, mutate, regressions

HERE = Path(__file__).resolve().parent
LIMIT_S = 5.0                   # per case, in process
MEMORY_LIMIT = 64 << 20         # Python allocations per case, in process
OK_ERRORS = (ValueError, OSError, LookupError)


@pytest.fixture(scope="module")
def bases(tiny_models):
    out = {}
    for kind, path in tiny_models.items():
        data = path.read_bytes()
        fields, end = header_fields(data)
        out[kind] = (data, fields, end)
    return out


def _in_process(path: Path) -> str:
    """validate → inspect → plan, as `hypura inspect/plan` do. Returns how it ended; fails on a bug."""
    from hypura_placement import inspect_model, load_hardware, plan_placement, validate_gguf

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        validate_gguf(path)
        info = inspect_model(path)
        plan_placement(info, load_hardware("cpu-2c-24g"), ctx=256)
        outcome = "ok"
    except OK_ERRORS as exc:
        assert str(exc), "an error without a message"
        outcome = type(exc).__name__
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < LIMIT_S, f"took {elapsed:.1f} s"
    assert peak < MEMORY_LIMIT, f"allocated {peak >> 20} MiB"
    return outcome


def _fuzz_in_process(bases, tmp_path_factory, examples: int):
    d = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(kind=st.sampled_from(sorted(bases)), rng=st.randoms(use_true_random=False))
    def case(kind, rng):
        data, fields, end = bases[kind]
        desc, bad = mutate(data, fields, end, rng)
        p = d / "case.gguf"
        p.write_bytes(bad)
        try:
            _in_process(p)
        except AssertionError as exc:
            raise AssertionError(f"{kind}: {desc}: {exc}") from None
    case()


def test_validator_inspect_plan_fuzz(bases, tmp_path_factory):
    _fuzz_in_process(bases, tmp_path_factory, 400)


@pytest.mark.slow
def test_validator_inspect_plan_fuzz_long(bases, tmp_path_factory):
    _fuzz_in_process(bases, tmp_path_factory, 20000)


def test_truncations_and_empty(bases, tmp_path):
    """Every prefix length of the header region (and a spread through the data) is a clear error."""
    data, _, end = bases["dense"]
    cuts = sorted(set(range(0, end + 64, 7)) | set(range(end, len(data), max(1, len(data) // 50))))
    outcomes = {}
    for n in cuts:
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(data[:n])
        outcomes[n] = _in_process(p)
        p.unlink()
    # GGUFTruncated: the GGUFError of a file that ends inside its header (hub reads headers by growing prefixes)
    clear = {"GGUFError", "GGUFTruncated"}
    assert all(v in clear for v in outcomes.values()), {k: v for k, v in outcomes.items() if v not in clear}
    assert len(outcomes) > 1500


def _harness(mode: str, paths: list[Path], timeout: float = 600) -> list[dict]:
    out = subprocess.run([sys.executable, str(HERE / "load_harness.py"), mode, *map(str, paths)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def _write_cases(bases, d: Path, n: int, seed: int) -> dict[Path, str]:
    rng = random.Random(seed)
    cases = {}
    for i in range(n):
        kind = ("dense", "moe")[i % 2]
        data, fields, end = bases[kind]
        desc, bad = mutate(data, fields, end, rng)
        p = d / f"{kind}-{i}.gguf"
        p.write_bytes(bad)
        cases[p] = f"{kind}: {desc}"
    return cases


def _check_loads(results: list[dict], cases: dict[Path, str]) -> dict[str, int]:
    bad = [(r, cases[Path(r["path"])]) for r in results
           if "signal" in r or r.get("exit") not in (0, 2) or r["seconds"] > 20 or r["maxrss_mb"] > 1024]
    assert not bad, bad[:5]
    assert len(results) == len(cases)
    return {"ok": sum(r.get("exit") == 0 for r in results), "error": sum(r.get("exit") == 2 for r in results)}


def test_llama_cpp_never_aborts_on_mutated_files(bases, tmp_path):
    """The engine (validate_gguf, then llama.cpp) on mutated files: an error or a valid run, never a signal."""
    cases = _write_cases(bases, tmp_path, 160, seed=1234)
    counts = _check_loads(_harness("resident", list(cases)), cases)
    assert counts["error"] > 100 and counts["ok"] > 0, counts   # the mutations do reach both outcomes


@pytest.mark.slow
def test_llama_cpp_never_aborts_on_mutated_files_long(bases, tmp_path):
    for seed, mode in ((7, "resident"), (8, "auto")):
        d = tmp_path / str(seed)
        d.mkdir()
        cases = _write_cases(bases, d, 2500, seed)
        _check_loads(_harness(mode, list(cases)), cases)


def test_regressions_are_rejected_and_would_abort(bases, tmp_path):
    """Files that once made llama.cpp abort: validate_gguf rejects them, and (negative control) without the
    validator llama.cpp really does abort on them — so this test would fail if the checks were removed."""
    data, fields, _ = bases["dense"]
    files = {}
    for name, content in regressions(data, fields).items():
        files[name] = tmp_path / f"{name}.gguf"
        files[name].write_bytes(content)
    guarded = {Path(r["path"]).stem: r for r in _harness("resident", list(files.values()))}
    assert all(r.get("exit") == 2 and "GGUFError" in r["message"] for r in guarded.values()), guarded
    raw = {Path(r["path"]).stem: r for r in _harness("resident-novalidate", list(files.values()))}
    aborted = {k for k, r in raw.items() if r.get("signal") == "SIGABRT"}
    assert aborted >= {"block_count_65536", "rms_eps_nan", "rms_eps_negative", "duplicate_token"}, raw


def _one_error_line(res: subprocess.CompletedProcess, cmd: str) -> str:
    assert res.returncode in (0, 2), (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "GGML_ASSERT" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"hypura {cmd}:")]
    others = [ln for ln in lines if not ln.startswith(f"hypura {cmd}:") and not ln.startswith("WARNING hypura")]
    if res.returncode == 2:
        assert len(errors) == 1 and not others, lines
        return errors[0]
    return "ok"


def _cli_cases(bases, tmp_path: Path) -> list[Path]:
    data, fields, end = bases["dense"]
    files = {"empty": b"", "ten": data[:10], "header-cut": data[: end // 2], "data-cut": data[: len(data) - 100],
             **regressions(data, fields)}
    rng = random.Random(99)
    for i in range(6):
        files[f"mut{i}"] = mutate(data, fields, end, rng)[1]
    out = []
    for name, content in files.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(content)
        out.append(p)
    return out


def test_hypura_commands_on_hostile_files(bases, tmp_path):
    from helpers import run_hypura

    outcomes = {}
    for p in _cli_cases(bases, tmp_path):
        for cmd, extra in (("run", ["-p", "hi", "-n", "2", "--ctx", "64"]), ("inspect", []),
                           ("plan", ["--hardware", "cpu-2c-24g"])):
            t0 = time.perf_counter()
            res = run_hypura(cmd, str(p), *extra, timeout=60)
            outcomes[(p.stem, cmd)] = _one_error_line(res, cmd)
            assert time.perf_counter() - t0 < 30
    run_errors = [v for (_, cmd), v in outcomes.items() if cmd == "run" and v != "ok"]
    assert len(run_errors) >= 10, outcomes


def test_server_survives_hostile_models(bases, tmp_path, tiny_models):
    """Hostile files in the models directory: each request for one is an HTTP error with a JSON body, the
    listing still works, and the good model next to them still generates."""
    from soak import ServeProcess, request

    models = tmp_path / "models"
    models.mkdir()
    for p in _cli_cases(bases, tmp_path):
        (models / p.name.replace("_", "-")).write_bytes(p.read_bytes())
    (models / "good.gguf").write_bytes(tiny_models["dense"].read_bytes())
    names = sorted(p.stem for p in models.glob("*.gguf") if p.stem != "good")
    with ServeProcess(models, "--mode", "resident", "--ctx", "128", "--threads", "1") as srv:
        status, body = request(srv.url, "GET", "/api/tags")
        assert status == 200 and "good:latest" in [m["name"] for m in json.loads(body)["models"]]
        for name in names:
            for stream in (False, True):
                status, body = request(srv.url, "POST", "/api/generate",
                                       {"model": name, "prompt": "hi", "stream": stream, "options": {"num_predict": 2}})
                if status == 200:   # a mutation that is still a valid model
                    continue
                assert 400 <= status < 600 and json.loads(body)["error"], (name, status, body)
            status, body = request(srv.url, "POST", "/api/show", {"model": name})
            assert status == 200 or json.loads(body)["error"], (name, status, body)
            assert srv.alive()
        status, body = request(srv.url, "POST", "/api/generate",
                               {"model": "good", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        assert status == 200 and json.loads(body)["done"] is True

"""The compatibility check: the tiny model of each architecture, in each real-format type, run by the real
``hypura`` CLI in each mode and compared with ``--mode resident`` (the reference of DESIGN.md "Correctness
invariant").

A cell is ``equal`` (the same greedy tokens), ``differs`` (first differing index: a bug), ``refused`` (the CLI's
one-line error: a mode that cannot take the file says so), or ``crash`` (a traceback, a signal, no JSON: a bug).
The CLI runs in a subprocess: this module imports nothing of the engine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import realfiles
from .presets import COMPAT
from .writer import write_synthetic

MODES = ("dense-stream", "expert-stream", "auto")
TYPES = ("F16", "Q4_K_M", "Q5_K_M", "Q2_K", "IQ4_XS")
PROMPT = "Once upon a time"
CTX = 512
N_PREDICT = 16
SPLIT_TENSORS = 8          # llama-gguf-split --split-max-tensors for the "-split" variants


@dataclass
class Cell:
    status: str            # equal | differs | refused | crash | reference
    detail: str = ""       # refusal reason, first differing index, crash tail
    ran: str = ""          # the mode the CLI reports it ran (auto: the one it chose)
    tokens: list[int] | None = None
    prompt_ubatch: int | None = None   # set when the run split its prompt (an expert cache below one layer)

    def short(self) -> str:
        if self.status == "equal":
            return f"equal ({self.ran})" if self.ran else "equal"
        return f"{self.status}: {self.detail}" if self.detail else self.status


def types_for(preset: str) -> tuple[str, ...]:
    """The llama-quantize types made for ``preset`` (gpt-oss also MXFP4_MOE, as published)."""
    return TYPES + (("MXFP4_MOE",) if preset.startswith("gpt-oss") else ())


def make_file(folder: Path, preset: str, qtype: str) -> Path:
    """The tiny ``preset`` model in ``qtype`` (F16 written by the synthetic writer, any other type by
    ``llama-quantize`` from that F16 file; ``<type>-split``: that file cut by ``llama-gguf-split``, the first shard
    returned). Files already there are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    base, _, split = qtype.partition("-")
    src = folder / f"{preset}-F16.gguf"
    if not src.exists():
        tmp = src.with_suffix(".tmp")
        write_synthetic(tmp, preset, qtype="F16", **COMPAT[preset])
        tmp.rename(src)
    path = folder / f"{preset}-{base}.gguf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        realfiles.quantize(src, tmp, base)
        tmp.rename(path)
    if split:
        first = folder / f"{preset}-{base}-split-00001-of-"
        found = sorted(folder.glob(first.name + "*.gguf"))
        if found:
            return found[0]
        return realfiles.split(path, folder / f"{preset}-{base}-split", max_tensors=SPLIT_TENSORS)[0]
    return path


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "hypura.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _one_line_error(stderr: str) -> str | None:
    """The CLI's refusal (``hypura run: ...``) when that is what it printed; None for a traceback."""
    if "Traceback" in stderr:
        return None
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("hypura")]
    return lines[-1].split(": ", 1)[-1] if lines else None


def run_mode(path: Path, mode: str, ram_budget: int | None = None, timeout: float = 180) -> Cell:
    """One greedy run of the real CLI; the cell without comparison (status ``ran`` or refused/crash)."""
    args = [str(path), "--mode", mode, "--raw", "--temp", "0", "-n", str(N_PREDICT), "-p", PROMPT, "--json",
            "--ctx", str(CTX), "--threads", "1", "--no-warm-start"]
    if ram_budget is not None:
        args += ["--ram-budget", str(ram_budget)]
    try:
        r = _cli("run", *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Cell("crash", f"no result within {timeout:.0f} s")
    if r.returncode == 0:
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
            return Cell("ran", ran=out.get("mode", ""), tokens=list(out["tokens"]), prompt_ubatch=out.get("prompt_ubatch"))
        except (ValueError, KeyError, IndexError):
            return Cell("crash", "exit 0 without a JSON result")
    err = _one_line_error(r.stderr)
    if err is not None and r.returncode in (1, 2):
        return Cell("refused", err.removeprefix(f"{path}: "))
    if r.returncode < 0:
        try:
            how = f"killed by {signal.Signals(-r.returncode).name}"
        except ValueError:
            how = f"killed by signal {-r.returncode}"
    else:
        how = f"exit {r.returncode}"
    lines = [ln.strip() for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("WARNING")]
    tail = " | ".join(lines[-2:])[-300:]
    return Cell("crash", f"{how}: {tail}" if tail else how)


def streaming_budget(path: Path) -> int:
    """A RAM budget that forces streaming: what ``hypura plan`` says stays resident (KV cache, compute buffers,
    every non-FFN weight) plus half of the FFN bytes, at least one layer's FFN (one streaming slot) and 4 KiB —
    and, for MoE, enough that the expert cache holds a whole layer's experts, so prompts go in llama.cpp's
    default ubatch as resident's do (with less, the run warns that its prompt is split)."""
    plan = _plan(path, "1T")
    layers = [layer["ffn_bytes"] for layer in plan["layers"]]
    ffn = sum(layers)
    weights = plan["tiers"]["ram"] + plan["tiers"]["gpu"] + plan["tiers"]["nvme"]
    budget = int(plan["resident_overhead"] + weights - ffn + max(ffn // 2, max(layers, default=0) + 4096))
    for _ in range(12):
        p = _plan(path, str(budget), may_not_fit=True)
        if p is None:          # no placement at this budget (e.g. a dense layer beside experts): more
            budget += budget // 16
            continue
        cache = p["expert_cache"]
        if p["mode"] == "full-resident":
            break
        if cache.get("prompt_ubatch", 512) >= 512:
            return budget
        # host slots are a page per kind longer than an expert (the streamer's layout): 3 kinds' pages per slot
        budget += (cache["layer_experts"] - cache["slots"]) * (cache["expert_bytes"] + 3 * 4096) + 4096
    raise RuntimeError(f"{path.name}: no streaming budget found whose expert cache holds a whole layer")


def _plan(path: Path, budget: str, may_not_fit: bool = False) -> dict | None:
    """``hypura plan --json`` at ``budget``; None when the budget is too small and ``may_not_fit``."""
    r = _cli("plan", str(path), "--ram-budget", budget, "--gpu-budget", "0", "--ctx", str(CTX), "--json", timeout=120)
    if r.returncode and may_not_fit and "too small" in r.stderr:
        return None
    if r.returncode:
        raise RuntimeError(f"hypura plan {path.name} failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def compare(ref: Cell, cell: Cell) -> Cell:
    """``cell`` judged against the resident reference ``ref``."""
    if cell.status != "ran":
        return cell
    if cell.tokens == ref.tokens:
        return Cell("equal", ran=cell.ran, tokens=cell.tokens, prompt_ubatch=cell.prompt_ubatch)
    a, b = ref.tokens or [], cell.tokens or []
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    split = f" (prompt split into ubatches of {cell.prompt_ubatch})" if cell.prompt_ubatch else ""
    return Cell("differs", f"tokens differ from index {first}{split}", ran=cell.ran, tokens=cell.tokens,
                prompt_ubatch=cell.prompt_ubatch)


def check_file(path: Path, modes: tuple[str, ...] = MODES) -> dict[str, Cell]:
    """Every mode of one file: ``resident`` (the reference) and each of ``modes`` under a streaming budget."""
    ref = run_mode(path, "resident")
    out = {"resident": Cell("reference", ran=ref.ran, tokens=ref.tokens) if ref.status == "ran" else ref}
    if ref.status != "ran":
        return out | {m: Cell("refused", "resident did not run") for m in modes}
    budget = streaming_budget(path)
    for m in modes:
        out[m] = compare(ref, run_mode(path, m, budget))
    return out


def as_json(cells: dict[str, Cell]) -> dict:
    return {m: {k: v for k, v in asdict(c).items() if v not in ("", None)} for m, c in cells.items()}

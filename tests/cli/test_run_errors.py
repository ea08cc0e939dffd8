"""Bad input to `hypura run`: one clear line on stderr, exit status 2, no traceback, no crash."""
from __future__ import annotations

import shutil

import pytest

from helpers import run_hypura


def _check(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in lines[0]


def test_missing_file(tmp_path):
    p = tmp_path / "absent.gguf"
    _check(run_hypura("run", str(p), "-p", "hi"), str(p))


def test_not_a_gguf(tmp_path):
    p = tmp_path / "text.gguf"
    p.write_text("this is not a model\n" * 100)
    _check(run_hypura("run", str(p), "-p", "hi"), str(p))


@pytest.mark.parametrize("keep", [0, 24, 5000, 0.5])
def test_truncated_gguf(tmp_path, default_model, keep):
    p = tmp_path / "cut.gguf"
    size = default_model.stat().st_size
    n = int(size * keep) if isinstance(keep, float) else keep
    with open(default_model, "rb") as src, open(p, "wb") as dst:
        dst.write(src.read(n))
    _check(run_hypura("run", str(p), "-p", "hi"), str(p))


def test_unknown_model_name(tmp_path):
    res = run_hypura("run", "no-such-model:7b", "-p", "hi", env={"HYPURA_MODELS": str(tmp_path)})
    _check(res, "no-such-model:7b", "not found")


def test_model_file_is_never_written(tmp_path, default_model):
    p = tmp_path / "m.gguf"
    shutil.copyfile(default_model, p)
    before = (p.stat().st_size, p.stat().st_mtime_ns, sorted(x.name for x in tmp_path.iterdir()))
    res = run_hypura("run", str(p), "--raw", "--temp", "0", "-n", "4", "-p", "hi")
    assert res.returncode == 0, res.stderr
    assert (p.stat().st_size, p.stat().st_mtime_ns, sorted(x.name for x in tmp_path.iterdir())) == before


def test_output_piped_into_a_reader_that_leaves(tmp_path):
    """`hypura inspect --tensors | head -1`: the reader closing the pipe is not an error message."""
    import subprocess

    from helpers import HYPURA
    from hypura_synthetic import write_synthetic

    path = write_synthetic(tmp_path / "k.gguf", "kimi-k2", header_only=True)   # ~1,100 tensors: > a pipe's 64 KiB
    proc = subprocess.Popen([*HYPURA, "inspect", str(path), "--tensors"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141) and b"Broken pipe" not in err and b"Traceback" not in err, err

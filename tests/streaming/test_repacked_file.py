"""The repacked-experts file (experts/repacked_file.py): the experts the CPU keeps repacked, converted once by
llama.cpp and read from there straight into their cache slots. Built on first use, reused while its manifest
matches, rebuilt when the model file changes or the file is damaged; the streamed run's tokens and logits stay
the resident reference's. Negative control: damaged expert bytes under an intact manifest change the logits."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

import hypura_llama as h
from hypura_streaming import ExpertStreamer, StreamSpec
from hypura_streaming.repacked_file import HEADER
from hypura_synthetic import TINY, write_synthetic
from helpers import greedy_with_logits

NAME = "qwen3-30b-a3b"


@pytest.fixture(autouse=True)
def any_free_space(monkeypatch):
    """The build tests must not depend on how full this machine's disk is (the policy has its own test)."""
    monkeypatch.setenv("HYPURA_REPACKED_KEEP_FREE", "1")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("repacked") / f"{NAME}-Q4_0.gguf"
    write_synthetic(path, NAME, qtype="Q4_0", skew=0.0, **TINY[NAME])
    return path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(path, directory):
    with h.LlamaModel.load(path, h.ModelParams(vocab_only=True)) as m:
        meta = m.metadata()
    n_exp = int(meta["qwen3moe.expert_count"])
    st = ExpertStreamer(StreamSpec.experts(path, range(TINY[NAME]["layers"]), n_exp // 2), repacked_dir=directory)
    model = st.load_model()
    try:
        if not st.layout.repacked:
            pytest.skip("this CPU keeps no Q4_0 expert repacked (no CPU_REPACK layout for it): nothing to store")
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8, ubatch=st.max_ubatch)
        return toks, logits, st.stats()
    finally:
        model.close()
        st.close()


def _reference(path, ubatch):
    with h.LlamaModel.load(path) as m:
        return greedy_with_logits(m, n=8, ubatch=ubatch)


def test_built_once_then_reused_and_bit_identical(model, tmp_path):
    before = _sha(model)
    toks, logits, first = _run(model, tmp_path)
    ref_toks, ref_logits = _reference(model, 512 if first["n_expert"] <= first["cache_slots"] else
                                      first["cache_slots"] // first["experts_used"])
    assert toks == ref_toks and np.array_equal(logits, ref_logits)
    built = first["repacked_file"]
    assert built["built_s"] is not None and os.path.getsize(built["path"]) == built["bytes"]
    assert first["converted_reads"] == 0 and first["experts_loaded"] > 0   # every miss read converted already
    toks2, logits2, second = _run(model, tmp_path)
    assert second["repacked_file"]["path"] == built["path"] and second["repacked_file"]["built_s"] is None
    assert toks2 == ref_toks and np.array_equal(logits2, ref_logits)
    assert _sha(model) == before                      # the model file is only read
    # without a directory: converted as read, the same logits
    toks3, logits3, third = _run(model, None)
    assert third["repacked_file"] == {"off": "no directory given"} and third["converted_reads"] > 0
    assert np.array_equal(logits3, ref_logits)


def test_rebuilt_when_the_model_changes_or_the_file_is_damaged(model, tmp_path):
    copy = tmp_path / "m.gguf"
    shutil.copyfile(model, copy)
    cache = tmp_path / "cache"
    _, ref_logits, first = _run(copy, cache)
    old = first["repacked_file"]["path"]
    st = os.stat(copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))      # "a new download" of the same name
    _, logits, second = _run(copy, cache)
    assert second["repacked_file"]["built_s"] is not None and second["repacked_file"]["path"] != old
    assert not os.path.exists(old) and np.array_equal(logits, ref_logits)   # the stale version is removed
    with open(second["repacked_file"]["path"], "r+b") as f:            # a damaged manifest
        f.write(b"garbage")
    _, logits, third = _run(copy, cache)
    assert third["repacked_file"]["built_s"] is not None and np.array_equal(logits, ref_logits)


def test_damaged_expert_bytes_change_the_logits(model, tmp_path):
    """Negative control: the experts really come from the file (bytes flipped past its manifest differ)."""
    _, ref_logits, first = _run(model, tmp_path)
    path = first["repacked_file"]["path"]
    with open(path, "r+b") as f:
        f.seek(HEADER)
        data = bytearray(f.read(os.path.getsize(path) - HEADER))
        f.seek(HEADER)
        f.write(bytes(b ^ 0x5A for b in data))
    _, logits, again = _run(model, tmp_path)
    assert again["repacked_file"]["built_s"] is None                  # reused: the manifest still matches
    assert not np.array_equal(logits, ref_logits)


def _dense_run(path, directory, layers=range(4, 18)):
    from hypura_streaming import DenseStreamer

    st = DenseStreamer(StreamSpec.dense(path, layers, 2), repacked_dir=directory)
    model = st.load_model()
    try:
        toks, logits = greedy_with_logits(model, st.eval_filter, n=8)
        return toks, logits, st.stats()
    finally:
        model.close()
        st.close()


def test_dense_layers_of_the_default_model_from_the_repacked_file(default_model, tmp_path):
    """Gemma 3 270M Q4_K_M dense-streamed (14 of 18 FFN layers through 2 slots): each layer's slot image is
    converted once into the file, then read from it with nothing converted; greedy tokens and logits equal the
    resident reference's. Negative control: damaged image bytes under an intact manifest change the logits."""
    from helpers import reference_greedy

    ref_toks, ref_logits = reference_greedy(default_model, n=8)
    before = _sha(default_model)
    toks, logits, first = _dense_run(default_model, tmp_path)
    assert first["repacked_file"]["built_s"] is not None and first["bytes_repacked"] == 0
    assert toks == ref_toks and np.array_equal(logits, ref_logits)
    toks, logits, second = _dense_run(default_model, tmp_path)
    assert second["repacked_file"]["built_s"] is None and second["bytes_repacked"] == 0 and second["fills"] > 0
    assert toks == ref_toks and np.array_equal(logits, ref_logits)
    _, _, off = _dense_run(default_model, None)
    assert off["repacked_file"] == {"off": "no directory given"} and off["bytes_repacked"] > 0
    assert _sha(default_model) == before
    path = second["repacked_file"]["path"]
    with open(path, "r+b") as f:
        f.seek(HEADER + 4096)
        f.write(bytes(1 << 20))
    _, logits, third = _dense_run(default_model, tmp_path)
    assert third["repacked_file"]["built_s"] is None and not np.array_equal(logits, ref_logits)


def test_not_built_when_the_disk_would_keep_too_little_free(model, tmp_path, monkeypatch):
    """The disk policy: a file that would leave less than the bytes to keep free is not built; the run says why
    and converts as it reads, with the same logits."""
    monkeypatch.setenv("HYPURA_REPACKED_KEEP_FREE", str(shutil.disk_usage(tmp_path).free + (1 << 30)))
    _, logits, stats = _run(model, tmp_path)
    assert stats["repacked_file"]["off"].startswith("not built:") and stats["converted_reads"] > 0
    assert not list(tmp_path.glob("*.experts"))
    monkeypatch.setenv("HYPURA_REPACKED_KEEP_FREE", "1")
    _, built_logits, built = _run(model, tmp_path)
    assert built["repacked_file"]["built_s"] is not None and np.array_equal(logits, built_logits)

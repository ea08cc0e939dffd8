"""GPU memory held within --gpu-budget across a streaming soak (issue 8 part 5, on the H100).

`hypura serve` in a streaming mode with a GPU budget well below the model, soaked by concurrent streaming
clients; the model worker's GPU memory (nvidia-smi, per process) is sampled every 0.5 s. The bound is the
budget plus what a worker's CUDA context costs on its own — measured, like the RAM soak's baseline, with a
worker serving a 2 MB model fully resident — plus 256 MiB of cuBLAS/stream workspaces."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from soak import ServeProcess, _children, check, settle, soak  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
MiB = 1 << 20


def _gpu_mib(pids: set[int]) -> int:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(mem) for pid, mem in (line.split(",") for line in out.splitlines() if line.strip())
               if int(pid) in pids)


class _GpuSampler(threading.Thread):
    def __init__(self, server_pid: int) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.peak_mib, self.samples = server_pid, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            self.peak_mib = max(self.peak_mib, _gpu_mib(set(_children(self.server_pid))))
            self.samples += 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs nvidia-smi")
    from hypura_synthetic import write_synthetic

    d = tmp_path_factory.mktemp("gpu-soak")
    write_synthetic(d / "dense.gguf", "llama3-70b", layers=8, scale=2, vocab=512, qtype="Q4_0")
    write_synthetic(d / "moe.gguf", "mixtral-8x7b", layers=8, scale=2, vocab=512, qtype="Q4_0")
    tiny = tmp_path_factory.mktemp("gpu-soak-tiny")
    write_synthetic(tiny / "tiny.gguf", "llama3-70b", layers=2, scale=32, vocab=512)
    with ServeProcess(tiny, "--mode", "resident", "--ctx", "512") as s:
        settle(s.url, s.pid, "tiny")
        baseline = _gpu_mib(set(_children(s.pid)))
    assert baseline > 0
    return d, baseline


@pytest.mark.parametrize("name,mode", [("dense", "dense-stream"), ("moe", "expert-stream")])
def test_gpu_memory_stays_within_the_budget_across_a_soak(models, name, mode):
    d, baseline = models
    size = (d / f"{name}.gguf").stat().st_size
    budget = size * 45 // 100
    with ServeProcess(d, "--mode", mode, "--ctx", "512", "--gpu-budget", str(budget)) as s:
        sampler = _GpuSampler(s.pid)
        sampler.start()
        try:
            report = soak(s.url, s.pid, name, duration_s=120, clients=8, disconnect_share=0.2, num_predict=16)
        finally:
            sampler.halt.set()
            sampler.join()
    bound = budget // MiB + baseline + 256
    print(f"{name}: model {size // MiB} MiB, budget {budget // MiB} MiB, context baseline {baseline} MiB, "
          f"worker GPU peak {sampler.peak_mib} MiB (bound {bound}), {report['requests']} requests")
    assert report["ok"] > 20 and sampler.samples > 100
    assert not check(report), check(report)
    assert 0 < sampler.peak_mib <= bound

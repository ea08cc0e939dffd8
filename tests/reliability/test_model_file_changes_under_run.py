"""`hypura run` whose model file is truncated while it generates: one clear line and a non-crash exit, never a
SIGBUS core dump with a page of backtrace (issue 19's CLI case)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time


def test_truncated_under_a_resident_run_is_one_clear_line(default_model, tmp_path):
    model = tmp_path / "copy.gguf"
    shutil.copyfile(default_model, model)
    argv = [sys.executable, "-m", "hypura.main", "run", str(model), "--mode", "resident", "--raw", "--temp", "0",
            "-n", "100000", "--ctx", "4096", "-p", "Once upon a time"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.read(1)            # generation has started: the weights are mapped and in use
        assert first, proc.stderr.read()
        os.truncate(model, 4096)               # the weights' pages are gone from under the map
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode not in (-signal.SIGBUS, -signal.SIGSEGV, -signal.SIGABRT), err[-2000:]
    assert proc.returncode == 74, (proc.returncode, err[-2000:])
    assert "the model file changed while it was being read" in err and str(model) in err
    assert "Traceback" not in err and "Fatal Python error" not in err

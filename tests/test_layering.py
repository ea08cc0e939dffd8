"""Dependencies point one way: importing a package never pulls in a package above it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

ORDER = ["hypura_llama", "hypura_hardware", "hypura_placement", "hypura_streaming", "hypura_engine",
         "hypura_server", "hypura"]
PURE = {"hypura_hardware", "hypura_placement"}  # usable without the native build


@pytest.mark.parametrize("pkg", ORDER)
def test_package_imports_nothing_above_it(pkg):
    code = f"import sys, json, {pkg}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('hypura'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {m.split(".")[0] for m in json.loads(out)}
    above = set(ORDER[ORDER.index(pkg) + 1:])
    assert not loaded & above, f"{pkg} imports {loaded & above}"
    if pkg in PURE:
        assert "hypura_llama" not in loaded, f"{pkg} must stay pure Python"

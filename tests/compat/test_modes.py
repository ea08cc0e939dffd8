"""Every streaming mode on every architecture's real-format files: the resident reference's greedy tokens, or a
clear one-line refusal naming the reason — never different tokens, never a crash (issue 14, items 4 and 5).

Today several cells are refusals (split sets, per-expert side tensors, architectures the streamers do not take
yet); ``tools/compat_matrix.py`` writes the full matrix into docs/COMPATIBILITY.md.
"""
from __future__ import annotations

import pytest

from hypura_synthetic import COMPAT
from hypura_synthetic.compat import MODES, check_file

CASES = ([(p, "Q4_K_M") for p in COMPAT] + [("gpt-oss-20b", "MXFP4_MOE"), ("mixtral-8x7b", "F16"),
                                             ("mixtral-8x7b", "Q4_K_M-split"), ("kimi-k2", "IQ4_XS")])


@pytest.mark.parametrize("preset,qtype", CASES, ids=[f"{p}-{t}" for p, t in CASES])
def test_streaming_modes_equal_resident_or_refuse(compat_file, preset, qtype):
    cells = check_file(compat_file(preset, qtype))
    ref = cells["resident"]
    assert ref.status == "reference" and ref.tokens, f"resident did not run: {ref.short()}"
    for mode in MODES:
        c = cells[mode]
        assert c.status in ("equal", "refused"), f"{mode}: {c.short()}"
        if c.status == "refused":
            assert c.detail and "\n" not in c.detail and "Traceback" not in c.detail, f"{mode}: {c.detail!r}"
        elif mode != "auto":
            assert c.ran == mode, f"{mode} ran as {c.ran}"
    auto = cells["auto"]
    if any(cells[m].status == "equal" for m in MODES[:2]):
        assert auto.status == "equal", f"auto failed where another mode runs: {auto.short()}"

"""The tier picture (hypura_placement.tier_picture): one column per layer, each part coloured by its tier."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from hypura_placement.tier_picture import COLOURS, plan_svg

SVG = "{http://www.w3.org/2000/svg}"


def _plan() -> dict:
    layers = [{"layer": i, "resident": "gpu", "resident_bytes": 1 << 20, "ffn": "gpu" if i < 2 else "nvme",
               "ffn_kind": "routed_expert", "ffn_bytes": 8 << 20} for i in range(5)]
    return {"model": "/m/Model <&> Q4.gguf", "mode": "expert-streaming", "layers": layers, "predicted_tps": 12.5,
            "tiers": {"gpu": 7 << 20, "ram": 0, "nvme": 24 << 20},
            "tensors": {"token_embd.weight": "ram", "output.weight": "gpu", "blk.0.attn_q.weight": "gpu"}}


def test_cells_per_layer_and_part_in_their_tier_colours():
    root = ET.fromstring(plan_svg(_plan()))
    cells = {(r.get("data-layer"), r.get("data-part")): r for r in root.iter(SVG + "rect") if r.get("data-part")}
    assert len(cells) == 2 * 5 + 2
    assert cells[("embedding", "embedding")].get("fill") == COLOURS["ram"]
    assert cells[("output", "output")].get("fill") == COLOURS["gpu"]
    assert [cells[(str(i), "ffn")].get("class") for i in range(5)] == ["cell tier-gpu"] * 2 + ["cell tier-nvme"] * 3
    assert all(cells[(str(i), "resident")].get("fill") == COLOURS["gpu"] for i in range(5))
    assert "layer 3 experts: NVMe (streamed), 8 MiB" in ET.tostring(root, encoding="unicode")
    texts = "".join(t.text or "" for t in root.iter(SVG + "text"))
    assert "Model <&> Q4.gguf" in texts and "NVMe 24 MiB" in texts     # escaped in the file, whole when parsed


def test_hit_rates_are_bars_under_their_layers():
    root = ET.fromstring(plan_svg(_plan(), hit_rates={2: 0.5, 3: 1.0, 4: 0.0}))
    bars = {r.get("data-layer"): float(r.get("height")) for r in root.iter(SVG + "rect") if r.get("class") == "hit"}
    assert bars == {"2": 15.0, "3": 30.0, "4": 0.0}
    assert not [r for r in ET.fromstring(plan_svg(_plan())).iter(SVG + "rect") if r.get("class") == "hit"]


def test_no_plan_rows_still_draws():
    root = ET.fromstring(plan_svg({"model": "x", "layers": []}))
    assert root.tag == SVG + "svg"

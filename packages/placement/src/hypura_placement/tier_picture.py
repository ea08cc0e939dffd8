"""The plan as a picture: one column per layer, its resident part above its FFN / experts, each coloured by
the tier it lives on (GPU, RAM, NVMe = streamed from the file); below, when given, each layer's expert-cache
hit rate. Pure string building (SVG 1.1, no script, no external reference), shared by ``hypura plan --svg``
and the server's live page, so both draw the same picture from the same plan dict (``Plan.to_dict()``).
"""
from __future__ import annotations

from html import escape

from .sizes import format_size

COLOURS = {"gpu": "#8b5cf6", "ram": "#3b82f6", "nvme": "#f59e0b", None: "#d1d5db"}
LABELS = {"gpu": "GPU", "ram": "RAM", "nvme": "NVMe (streamed)", None: "none"}
WIDTH = 760
LEFT = 92


def _cell(x: float, y: float, w: float, h: float, tier: str | None, layer: int | str, part: str, title: str) -> str:
    return (f'<rect class="cell tier-{tier or "none"}" data-layer="{layer}" data-part="{part}" x="{x:.1f}" y="{y}" '
            f'width="{max(w - 1, 1):.1f}" height="{h}" fill="{COLOURS.get(tier, COLOURS[None])}">'
            f'<title>{escape(title)}</title></rect>')


def _outer_tiers(plan: dict) -> dict[str, str | None]:
    """Tiers of the tensors outside the layers (embedding, output), when the plan lists its tensors."""
    tensors = plan.get("tensors") or {}
    find = lambda prefix: next((t for n, t in tensors.items() if n.startswith(prefix)), None)  # noqa: E731
    return {"embedding": find("token_embd"), "output": find("output.") or find("token_embd")}


def plan_svg(plan: dict, hit_rates: dict[int, float] | None = None, title: str | None = None) -> str:
    """An SVG document of ``plan`` (a ``Plan.to_dict()``; ``tensors`` may be left out). ``hit_rates``: the
    measured expert-cache hit rate per layer (0..1), drawn as a bar under each layer."""
    layers = sorted(plan.get("layers") or [], key=lambda r: r["layer"])
    n = max(len(layers), 1)
    col = (WIDTH - LEFT - 16) / (n + 2)        # + embedding and output columns
    top, cell = 44, 34
    rows_y = {"resident": top, "ffn": top + cell + 4}
    height = top + 2 * cell + 4 + (40 if hit_rates is not None else 0) + 58
    name = title or str(plan.get("model", "")).rsplit("/", 1)[-1]
    tiers = plan.get("tiers") or {}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="tier-picture" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           f'<text x="8" y="18" font-size="14" font-weight="bold">{escape(name)}</text>',
           f'<text x="8" y="34" fill="#374151">{escape(str(plan.get("mode", "")))}; '
           f'{len(layers)} layers; predicted {float(plan.get("predicted_tps") or 0):.3g} tok/s; weights '
           + escape(", ".join(f"{LABELS[t].split()[0]} {format_size(tiers.get(t, 0))}" for t in ("gpu", "ram", "nvme")))
           + "</text>",
           f'<text x="8" y="{rows_y["resident"] + 21}">attention</text>',
           f'<text x="8" y="{rows_y["ffn"] + 21}">FFN/experts</text>']
    outer = _outer_tiers(plan)
    x = LEFT
    out.append(_cell(x, rows_y["resident"], col, 2 * cell + 4, outer["embedding"], "embedding", "embedding",
                     f"embedding: {LABELS.get(outer['embedding'], 'compute tier')}"))
    for i, r in enumerate(layers):
        x = LEFT + (i + 1) * col
        kind = {"routed_expert": "experts", "dense_ffn": "FFN"}.get(r.get("ffn_kind"), "FFN")
        out.append(_cell(x, rows_y["resident"], col, cell, r.get("resident"), r["layer"], "resident",
                         f"layer {r['layer']} attention: {LABELS.get(r.get('resident'))}, "
                         f"{format_size(r.get('resident_bytes', 0))}"))
        out.append(_cell(x, rows_y["ffn"], col, cell, r.get("ffn"), r["layer"], "ffn",
                         f"layer {r['layer']} {kind}: {LABELS.get(r.get('ffn'))}, {format_size(r.get('ffn_bytes', 0))}"))
        if hit_rates is not None and r["layer"] in hit_rates:
            h = max(0.0, min(1.0, float(hit_rates[r["layer"]])))
            y0 = rows_y["ffn"] + cell + 6
            out.append(f'<rect class="hit" data-layer="{r["layer"]}" x="{x:.1f}" y="{y0 + 30 * (1 - h):.1f}" '
                       f'width="{max(col - 1, 1):.1f}" height="{30 * h:.1f}" fill="#10b981">'
                       f'<title>layer {r["layer"]}: expert-cache hit rate {h:.1%}</title></rect>')
    x = LEFT + (n + 1) * col
    out.append(_cell(x, rows_y["resident"], col, 2 * cell + 4, outer["output"], "output", "output",
                     f"output: {LABELS.get(outer['output'], 'compute tier')}"))
    if hit_rates is not None:
        out.append(f'<text x="8" y="{rows_y["ffn"] + cell + 28}">hit rate</text>')
    y = height - 18
    lx = 8
    for t in ("gpu", "ram", "nvme"):
        out.append(f'<rect x="{lx}" y="{y - 10}" width="12" height="12" fill="{COLOURS[t]}"/>'
                   f'<text x="{lx + 16}" y="{y}">{LABELS[t]}</text>')
        lx += 40 + 8 * len(LABELS[t])
    if n > 1:
        out.append(f'<text x="{LEFT}" y="{y - 22}" fill="#6b7280">emb | layer 0 … {layers[-1]["layer"]} | out</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

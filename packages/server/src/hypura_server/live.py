"""The live view: ``GET /`` in a browser (``Accept: text/html``) is one self-contained page (`live_page.html`:
no build step, no framework, nothing fetched from elsewhere) that polls ``GET /api/hypura/live`` and shows each
loaded model's plan as a tier picture (``GET /api/hypura/tiers.svg?model=NAME``, drawn by
``hypura_placement.tier_picture`` as ``hypura plan --svg`` draws it) and, while a request runs, its tok/s, disk
GB/s against the disk rate the hardware profile measured, stalls, and the expert cache's hit rate per layer.
API clients (``Accept: */*``, JSON) keep getting ``Ollama is running`` from ``GET /``. The routes are
``models_api``'s (it owns ``GET /``).
"""
from __future__ import annotations

import time
from importlib import resources
from typing import Any

from flask import Response, jsonify, request

from hypura_placement.tier_picture import plan_svg

from .errors import bad_request
from .state import state

def wants_html() -> bool:
    """A browser's navigation (text/html preferred to text/plain), not an API client's ``*/*``."""
    best = request.accept_mimetypes.best_match(["text/plain", "text/html"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["text/plain"]


def page() -> Response:
    html = resources.files("hypura_server").joinpath("live_page.html").read_text(encoding="utf-8")
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:"
    return resp


def _disk_rate() -> tuple[float | None, str]:
    """The sequential direct-I/O read rate the cached hardware profile measured (never measured here)."""
    try:
        from hypura_hardware.profile import read_cached

        prof = read_cached() or {}
    except (OSError, ValueError):
        prof = {}
    bps = (prof.get("disk") or {}).get("seq_read_bps")
    return (float(bps), f"hypura profile, {prof['disk'].get('path', '')}") if bps else (None, "not measured yet: run `hypura profile`")


def _plan_of(slot: Any) -> dict:
    """The plan the model's runner follows; for llama.cpp's own placement (no plan): every layer on one tier."""
    runner = slot.runner
    plan = getattr(runner, "plan", None)
    if plan is not None and not isinstance(plan, dict):   # an in-process Runner
        plan = plan.to_dict()
    if plan:
        return plan
    stats = runner.stats()
    tier_bytes = stats.get("tier_bytes") or {}
    tier = max(tier_bytes, key=tier_bytes.get) if tier_bytes else "ram"
    meta = getattr(runner, "metadata", {}) or {}
    arch = meta.get("general.architecture", "")
    try:
        n_layer = int(meta.get(f"{arch}.block_count", 0))
    except (TypeError, ValueError):
        n_layer = 0
    return {"model": slot.entry.name, "mode": f"{stats.get('mode', 'resident')} (llama.cpp's own placement)",
            "tiers": tier_bytes, "predicted_tps": stats.get("predicted_tps", 0), "tensors": {"token_embd.weight": tier},
            "layers": [{"layer": i, "resident": tier, "ffn": tier, "ffn_kind": "dense_ffn"} for i in range(n_layer)]}


def _hit_rates(stats: dict) -> dict[int, float] | None:
    by_layer = stats.get("expert_hit_rate_by_layer")
    return {int(k): float(v) for k, v in by_layer.items()} if by_layer else None


def _model_figures(slot: Any, now: float) -> dict:
    runner = slot.runner
    live = dict(getattr(runner, "live", None) or {})
    stats = live.get("stats") or runner.stats()
    pieces, first, last = live.get("pieces", 0), live.get("first_piece"), live.get("last_piece")
    tok_s = (pieces - 1) / (last - first) if first and last and last > first and pieces > 1 else None
    plan = _plan_of(slot)
    return {"name": slot.entry.name, "running": bool(live.get("running")), "pieces": pieces,
            "tok_s": round(tok_s, 3) if tok_s else None,
            "elapsed_s": round(now - live["started"], 3) if live.get("started") else None,
            "mode": stats.get("mode"), "planned_mode": stats.get("planned_mode") or plan.get("mode"),
            "predicted_tps": stats.get("predicted_tps") or plan.get("predicted_tps"),
            "last_eval_tps": stats.get("last_eval_tps"),
            "bytes_from_disk": stats.get("bytes_from_disk", 0), "disk_gbps": stats.get("disk_gbps"),
            "disk_bps_now": live.get("disk_bps_now") if live.get("running") else None,
            "stall_s": stats.get("stall_s"), "passes": stats.get("passes"),
            "expert_cache_hit_rate": stats.get("expert_cache_hit_rate"), "hit_rate_by_layer": _hit_rates(stats),
            "tier_bytes": stats.get("tier_bytes") or plan.get("tiers"), "n_layer": len(plan.get("layers") or []),
            "streamed_layers": stats.get("streamed_layers", 0)}


def live() -> Response:
    """The live page's figures: every loaded model, and the measured disk rate they are read against."""
    now = time.time()
    bps, source = _disk_rate()
    models = [_model_figures(slot, now) for slot in state().manager.loaded() if slot.runner is not None]
    return jsonify({"time": now, "disk_rate_bps": bps, "disk_rate_source": source, "models": models})


def tiers_svg() -> Response:
    """The tier picture of a loaded model's plan, with its measured per-layer hit rates when it streams experts."""
    name = request.args.get("model", "")
    for slot in state().manager.loaded():
        if slot.runner is not None and slot.entry.name == name:
            live = getattr(slot.runner, "live", None) or {}
            stats = live.get("stats") or slot.runner.stats()
            svg = plan_svg(_plan_of(slot), _hit_rates(stats), title=name)
            return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})
    raise bad_request(f"model {name!r} is not loaded")

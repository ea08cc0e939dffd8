"""`hypura plan MODEL|URL [--gpu-budget SIZE] [--ram-budget SIZE] [--ctx N] [--hardware NAME|FILE] [--json] [--svg FILE]`:
where every tensor would live (GPU / RAM / NVMe), the mode, and the predicted decode speed. A URL or
hf.co/OWNER/REPO[:QUANT] is planned from its header alone (Range requests): before a weight is downloaded."""
from __future__ import annotations

import argparse
import json
import sys
from itertools import groupby

from ._common import int_in, size_arg
from .inspect import resolve_path

FALLBACK_PRESET = "cpu-2c-24g"


def load_spec(hardware: str | None):
    """(HardwareSpec, note): the named preset/file, else this machine's profile, else the fallback preset
    (with a note saying so)."""
    from hypura_placement import load_hardware

    if hardware:
        return load_hardware(hardware), None
    try:
        from hypura_engine.decode_rate import measure_decode_bps
        from hypura_hardware import load_or_measure

        return load_hardware(load_or_measure(progress=sys.stderr.isatty(), decode_rate=measure_decode_bps)), None
    except (ImportError, RuntimeError, OSError) as exc:
        return load_hardware(FALLBACK_PRESET), (f"this machine's hardware profile is unavailable ({exc}); "
                                                f"planned for the preset {FALLBACK_PRESET} instead")


def _ranges(layers: list[int]) -> str:
    out = []
    for _, grp in groupby(enumerate(layers), key=lambda p: p[1] - p[0]):
        g = [x for _, x in grp]
        out.append(str(g[0]) if len(g) == 1 else f"{g[0]}-{g[-1]}")
    return ",".join(out) or "-"


def format_plan(plan, info, note: str | None = None) -> str:
    """The readable table: per-tier totals, a per-layer map, the prediction and its bottleneck."""
    from hypura_placement import format_size as fs

    c = plan.compute_tier
    lines = [f"model       {info.path} ({info.architecture}, {info.n_params / 1e9:.1f} B params, {info.file_type}, "
             f"{fs(sum(t.nbytes for t in info.tensors))} of weights{', header-only' if info.header_only else ''})",
             f"hardware    {plan.hardware}; compute tier {c}; context {plan.ctx} tokens",
             f"mode        {plan.mode}", ""]
    if note:
        lines.insert(0, f"note: {note}")
    lines.append(f"{'tier':<6} {'weights':>11} {'reserved':>11} {'KV+buffers':>11} {'used':>11} {'budget':>11}")
    budgets = {"gpu": plan.gpu_budget, "ram": plan.ram_budget, "nvme": None}
    for tier in ("gpu", "ram", "nvme"):
        kv = plan.resident_overhead if tier == c else 0
        b = budgets[tier]
        lines.append(f"{tier:<6} {fs(plan.tiers.get(tier, 0)):>11} {fs(plan.reserved.get(tier, 0)):>11} "
                     f"{fs(kv):>11} {fs(plan.used(tier)):>11} {'file' if b is None else fs(b):>11}")
    lines.append(f"KV cache and compute buffers: {plan.overhead_source}")
    if plan.n_slots:
        lines.append(f"streaming slots: {plan.n_slots} x {fs(plan.slot_bytes)} on {c}")
    lines += ["", "layers      resident part   FFN / experts"]
    rows = [(r["resident"], r["ffn"], r["ffn_kind"], r["layer"]) for r in plan.layers]
    for key, grp in groupby(rows, key=lambda r: r[:3]):
        layers = [r[3] for r in grp]
        kind = {"routed_expert": "experts", "dense_ffn": "dense FFN", None: "-"}[key[2]]
        lines.append(f"{_ranges(layers):<11} {key[0] or '-':<15} {kind} on {key[1] or '-'}")
    ec = plan.expert_cache
    if ec.get("expert_bytes"):
        caches = ", ".join(f"{t}: {n} experts (hit {ec['hit_rate'][t]:.1%})" for t, n in ec["experts"].items())
        lines.append(f"expert cache {caches}; one expert {fs(ec['expert_bytes'])}; {ec['model']}")
    spt = plan.seconds_per_token
    lines += ["", f"per token   touched {fs(plan.touched_bytes_per_token)}, from RAM {fs(plan.ram_bytes_per_token)}, "
                  f"from NVMe {fs(plan.nvme_bytes_per_token)}",
              "time/token  " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in spt.items()),
              f"predicted   {plan.predicted_tps:.3g} tok/s (bottleneck: {plan.bottleneck}; pipelined bound), "
              f"{plan.predicted_tps_serial:.3g} tok/s if nothing overlaps"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hypura_placement import inspect_model, plan_placement

    from ..config import load_config

    from .remote_model import fetched_line, is_remote, remote_model_info

    cfg = load_config({"gpu_budget": args.gpu_budget, "ram_budget": args.ram_budget, "ctx": args.ctx})
    remote = None
    if is_remote(args.model):     # header only, by Range requests; KV and buffers: the planner's estimate
        info, remote = remote_model_info(args.model)
    else:
        info = inspect_model(resolve_path(args.model))
    spec, note = load_spec(args.hardware)
    if note:
        print(f"hypura plan: note: {note}", file=sys.stderr)
    overhead = None
    if not info.header_only and remote is None:  # the same figure `hypura run` plans with: llama.cpp's no_alloc dry run
        from hypura_llama import estimate_overhead

        overhead = estimate_overhead(info.path, cfg.ctx)
    from hypura_engine.planning import routing_for_plan

    routing = None if args.no_routing_stats or remote else routing_for_plan(info)   # as `hypura run` with warm start
    plan = plan_placement(info, spec, gpu_budget=cfg.gpu_budget, ram_budget=cfg.ram_budget, ctx=cfg.ctx,
                          resident_overhead=overhead, routing=routing)
    if args.svg:
        from hypura_placement.tier_picture import plan_svg

        with open(args.svg, "w") as f:
            f.write(plan_svg(plan.to_dict(), title=str(info.path).rsplit("/", 1)[-1]))
    if args.json:
        out = plan.to_dict()
        if note:
            out["hardware_note"] = note
        if remote is not None:
            out["fetched_bytes"], out["requests"], out["remote_size"] = remote.fetched, remote.requests, sum(remote.sizes)
        print(json.dumps(out, indent=1))
    else:
        print(format_plan(plan, info, note))
        if remote is not None:
            print(fetched_line(remote))
        if args.svg:
            print(f"tier picture: {args.svg}")
    return 0


def register(subparsers) -> None:
    """Add `hypura plan`."""
    p = subparsers.add_parser("plan", help="place every tensor on GPU / RAM / NVMe and predict the speed",
                              description=__doc__)
    p.add_argument("model", metavar="MODEL", help="a .gguf file (header-only files work), an https://.../model.gguf URL "
                   "or hf.co/OWNER/REPO[:QUANT] (only the header is fetched)")
    p.add_argument("--gpu-budget", default=None, metavar="SIZE", type=size_arg,
                   help=f"compute-device memory budget (default: measured free minus a margin; 0 = CPU only); "
                        "sizes: 512M, 8G, 16GiB, 1.5T (K/M/G/T are binary: G = GiB = 1024^3; KB/MB/GB decimal)")
    p.add_argument("--ram-budget", default=None, metavar="SIZE", type=size_arg, help="RAM budget (default: measured available "
                   "minus a margin)")
    p.add_argument("--ctx", type=int_in(1, 1 << 24), default=None, help="context size in tokens (default 4096)")
    p.add_argument("--hardware", default=None, metavar="NAME|FILE",
                   help="plan for a preset (mac-m1max-32g, mac-m2ultra-192g, rtx4090-64g, h100-80g, cpu-2c-24g) "
                        "or a profile JSON file (default: this machine's measured profile)")
    p.add_argument("--no-routing-stats", action="store_true",
                   help="MoE: predict expert-cache hit rates for uniform routing even when earlier runs left "
                        "routing statistics (the default uses them, as `hypura run` does with warm start)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--svg", default=None, metavar="FILE", help="also write the tiers as a picture (SVG): per layer, "
                   "what is on GPU, RAM and NVMe — the picture the server's page shows")
    p.set_defaults(func=run, command="plan")

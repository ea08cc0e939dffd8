#!/usr/bin/env python3
"""Write a random-weight GGUF in the exact tensor names, shapes and metadata of a real architecture.

Examples:
  tools/make_synthetic.py llama3-70b /models/llama3-70b-q4_0.gguf              # ~40 GB, disk-bound
  tools/make_synthetic.py kimi-k2 kimi.gguf --header-only                        # 1.03T params, a few MB
  tools/make_synthetic.py mixtral-8x7b tiny.gguf --layers 2 --scale 32 --vocab 512 --skew 0.8

Weights are zero-mean and never repeat (DESIGN.md "Routing caveat"); scales are finite. --skew aims the
router at the hottest 10% of experts (0 = uniform routing, the expert cache's worst case; 0.8 = ~80% of
selections with >= 128 experts; fewer experts reach less, e.g. ~0.43 for 64 top-8: the achieved share on
Gaussian inputs is printed and stored in hypura.synthetic.hot_share_gaussian).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypura_placement import read_header
from hypura_synthetic import ARCH_SHAPES, QTYPES, get_preset, params_estimate, write_synthetic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_synthetic.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", choices=sorted(ARCH_SHAPES), help="architecture and size to imitate")
    p.add_argument("output", type=Path, help="the .gguf file to write (overwritten)")
    p.add_argument("--type", dest="qtype", default="Q4_0", choices=sorted(QTYPES),
                   help="type of the weight matrices (1-D tensors and routers stay F32) [Q4_0]")
    p.add_argument("--layers", type=int, help="number of layers (default: the preset's)")
    p.add_argument("--scale", type=int, default=1,
                   help="divide widths and head counts by this (head sizes kept, widths multiples of 32) [1]")
    p.add_argument("--experts", type=int, help="routed experts per layer (MoE presets)")
    p.add_argument("--experts-used", type=int, help="experts used per token (MoE presets)")
    p.add_argument("--dense-lead", type=int, help="leading dense layers (deepseek2 presets)")
    p.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's; at least 300)")
    p.add_argument("--skew", type=float, default=0.0,
                   help="share of router selections aimed at the hottest 10%% of experts (0 = uniform) [0]")
    p.add_argument("--residual", type=float, default=1.0,
                   help="RMS gain of the projections into the residual stream (attention output, FFN down): "
                        "below 1 the hidden state changes little per layer, as in trained models, and the next "
                        "layer's routing is predictable from this layer's [1]")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file) [0]")
    p.add_argument("--header-only", action="store_true",
                   help="write the tensor table without data (marked hypura.header_only = true): for planning")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        shape = get_preset(a.preset).scaled(layers=a.layers, scale=a.scale, experts=a.experts,
                                            experts_used=a.experts_used, vocab=a.vocab, dense_lead=a.dense_lead)
        print(f"{a.preset}: {params_estimate(shape) / 1e9:.3f} B parameters, {shape.n_layer} layers, "
              f"n_embd {shape.n_embd}" + (f", {shape.n_expert} experts (top-{shape.n_expert_used})" if shape.moe else ""),
              file=sys.stderr)
        t0 = time.perf_counter()
        out = write_synthetic(a.output, a.preset, layers=a.layers, scale=a.scale, experts=a.experts,
                              experts_used=a.experts_used, vocab=a.vocab, dense_lead=a.dense_lead, qtype=a.qtype,
                              header_only=a.header_only, skew=a.skew, residual=a.residual, seed=a.seed, progress=not a.quiet)
    except (ValueError, LookupError, OSError) as exc:
        print(f"make_synthetic.py: {exc}", file=sys.stderr)
        return 2
    size, dt = out.stat().st_size, time.perf_counter() - t0
    kv = read_header(out).kv
    if "hypura.synthetic.hot_share_gaussian" in kv:
        print(f"routing: router gain {kv['hypura.synthetic.router_gain']:.2f}, hottest 10% of experts take "
              f"{kv['hypura.synthetic.hot_share_gaussian']:.0%} of selections on Gaussian inputs", file=sys.stderr)
    print(f"wrote {out}: {size / 1e9:.3f} GB in {dt:.1f} s ({size / max(dt, 1e-9) / 1e9:.2f} GB/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Warm start: the expert caches seeded from earlier runs' routing counts, at load time.

The counts become the caches' eviction frequencies, and the most chosen experts are read now: into the
device cache (leaving one token's working set free, so the first layers do not evict what was just
read), then the next ones into the RAM cache. It changes which reads happen, never the output.
"""
from __future__ import annotations


def preload(st, counts: dict[int, dict[int, int]]) -> tuple[int, int]:
    """Seed `st`'s (an ExpertStreamer, loaded) caches from `counts` (layer -> expert -> times chosen) and
    read the most chosen experts; returns how many went into the cache and into the RAM cache."""
    flat = {(int(layer), int(e)): int(n) for layer, row in counts.items() for e, n in row.items()
            if int(layer) in st.spec.layers and 0 <= int(e) < st.n_expert and int(n) > 0}
    st.cache.seed(flat)
    ranked = sorted(flat, key=lambda k: (-flat[k], k))
    room = max(0, st.n_slots - st.n_used)
    in_cache = st.cache.preload(ranked[:room])
    in_ram = []
    if st.ram_cache is not None:
        st.ram_cache.seed(flat)
        in_ram = st.ram_cache.preload(ranked[room:room + st.ram_slots])
    kinds = st.layout.kinds
    futs = [st.reads.submit(layer, kind, e, s, None) for (layer, e), s in in_cache for kind in kinds]
    futs += [st.reads.submit(layer, kind, e, None, s) for (layer, e), s in in_ram for kind in kinds]
    st.reads.await_fill(futs, [s for _, s in in_cache], [s for _, s in in_ram])
    return len(in_cache), len(in_ram)

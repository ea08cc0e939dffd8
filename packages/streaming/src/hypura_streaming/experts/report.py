"""What an expert streamer reports: the shared `StreamStats`, then the cache's, the tiers' and the guesses'."""
from __future__ import annotations

from collections import Counter


def routing_summary(routing: dict[int, Counter], n_expert: int) -> dict:
    """Distinct experts chosen per layer and the share of selections of the top 10% experts."""
    out = {}
    for layer, counts in sorted(routing.items()):
        total = sum(counts.values())
        top = sorted(counts.values(), reverse=True)[: max(1, n_expert // 10)]
        out[layer] = {"distinct": len(counts), "top10pct_share": round(sum(top) / total, 3) if total else 0.0}
    return out


def _repacked_file(st) -> dict | None:
    """Where the repacked experts came from: the file (path, bytes, build time) or why not (None: none repacked)."""
    if st.layout is None or not st.layout.repacked:
        return None
    if st.repacked_file is not None:
        return st.repacked_file.report()
    return {"off": st.repacked_file_reason or "no directory given"}


def expert_stats(st) -> dict:
    """The statistics of `st`, an `ExpertStreamer`."""
    lay, cache = st.layout, st.cache.stats
    read = st.bytes_from_disk
    per_token = st.decode_bytes / st.decode_passes if st.decode_passes else 0
    common = st._stream_stats(st.cache_bytes, read / st.passes if st.passes else 0, per_token,
                              st.memory is not None and st.memory.on_device)
    ram = {"ram_cache_slots": 0}
    if st.ram_cache is not None:
        rc = st.ram_cache.stats
        ram = {"ram_cache_slots": st.ram_slots, "ram_cache_bytes": st.memory.ram_cache_bytes,
               "ram_cache_hits": rc.hits, "ram_cache_hit_rate": round(rc.hit_rate, 4),
               "bytes_from_ram": st.ram_bytes_uploaded}
    whole = lay.pass_bytes if lay is not None else 0
    return {
        **common.as_dict(), "cache_slots": st.n_slots, "n_expert": st.n_expert, "experts_used": st.n_used,
        # per decoded token (above): bytes read in single-token passes (the prompt's chunks excluded),
        # speculative reads included; and the bytes of the experts those passes needed and did not hold,
        # the least any reader must fetch (the physical limit's denominator)
        "needed_bytes_per_token": st.needed_bytes / st.decode_passes if st.decode_passes else 0,
        "decode_passes": st.decode_passes, "decode_stall_s": round(st.decode_stall_s, 3),
        # the decode thread's own Python at the splits of single-token passes (its waits for reads excluded)
        "decode_callback_s": round(st.decode_callback_s, 3),
        "experts_loaded": cache.misses, "expert_cache_hits": cache.hits, "experts_prefetched": cache.prefetched,
        "expert_cache_hit_rate": round(cache.hit_rate, 4),
        "expert_hit_rate_by_layer": {str(k): round(v, 4) for k, v in cache.hit_rate_by_layer().items()},
        "io_saved_fraction": round(1 - st.expert_bytes_read / (whole * st.passes), 4) if st.passes else 0,
        "in_place_fraction": round(st.in_place_fraction, 4),
        "repacked_fraction": round(lay.repacked_fraction, 4) if lay is not None else 0.0,
        # one cache slot holds the largest expert of each kind across the streamed layers; the mean expert
        # (every kind) is what a slot would need with one type per kind: the difference is what per-layer types cost
        "slot_bytes": lay.ram_stride if lay is not None else 0,
        "expert_bytes_mean": round(lay.slot_bytes_mean) if lay is not None else 0,
        "staging_bytes": st.memory.staging.nbytes if st.memory is not None else 0,
        # expert reads (one kind of one expert) waited for at the split before their own matmul: read while
        # the layer's earlier expert matmuls computed
        "reads_overlapped": st.staged_reads,
        # repacked experts: read converted from the repacked file, or converted as they landed (`converted_reads`)
        "repacked_file": _repacked_file(st),
        "converted_reads": st.reads.converted if st.reads is not None else 0, "cache_policy": st.policy,
        **ram,
        "routing": routing_summary(st.routing, st.n_expert), "prefetch": st.guesses.report(cache), **st.warm,
    }

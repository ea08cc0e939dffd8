"""The expert cache's model for the planner: the bytes of one slot, the hit rates a cache of a given size gets,
and the prompt ubatch it allows. `moe` is the planner's streamed routed-expert units (layer, names, n_expert,
tier). Pure arithmetic, no placement."""
from __future__ import annotations

N_UBATCH = 512                  # llama.cpp's default ubatch
PAGE = 4096                     # direct I/O's alignment: host expert slots are page-rounded plus one page


def cache_slot_bytes(moe: list, by_name: dict, host: bool) -> int:
    """Bytes of one expert-cache slot: the cache serves every streamed layer's experts, so each kind of
    per-expert tensor (`ffn_down_exps.weight`, ...) takes the largest expert of that kind across those layers
    (K-quant recipes give a kind other types by layer; the streamer's layout sizes its slots so). In host
    memory (`host`) a kind's slot is at most whole pages plus one (what reading experts in place needs:
    hypura_streaming's layout), counted so here, so that the plan's slot count is the streamer's."""
    largest: dict[str, int] = {}
    for u in moe:
        for name in u.names:
            kind = name.split(".", 2)[-1]
            largest[kind] = max(largest.get(kind, 0), by_name[name].nbytes // max(1, u.n_expert))
    if host:
        return sum(-(-b // PAGE) * PAGE + PAGE for b in largest.values())
    return sum(largest.values())


def hit_rates(routing: dict[int, dict[int, int]] | None, moe: list, c_cache: int, r_cache: int,
               s_all: int, s_nvme: int, ctier: str) -> tuple[float, float, str]:
    """Hit rates of the compute-tier expert cache (all streamed MoE layers) and of the RAM cache behind it
    (the NVMe-tier layers' misses), and the model used.

    Uniform routing: ``c / S`` and ``r / S_nvme``. With routing statistics, a frequency-aware cache holds the
    most chosen experts: the compute cache hits the share of selections of the ``c`` most chosen (layer,
    expert) pairs, the RAM cache the share of the NVMe layers' remaining selections of the next ``r``.
    Counts get one pseudo-selection per expert (add-one smoothing), so that a few tokens' statistics do not
    promise that a cache of never-seen experts hits; equal counts give the uniform compute-cache figure (the
    RAM cache is then taken to hold experts the compute cache does not, not an independent sample).
    ``s_all`` / ``s_nvme``: experts of the streamed MoE layers / of those on NVMe."""
    uniform = (c_cache / s_all if s_all else 0.0, r_cache / s_nvme if s_nvme else 0.0,
               "uniform routing: hit = cache capacity / experts it serves; caches independent")
    if not routing or not moe or not any(routing.get(u.layer) for u in moe):
        return uniform
    ranked = sorted(((routing.get(u.layer, {}).get(e, 0) + 1, u.tier) for u in moe for e in range(u.n_expert)),
                    key=lambda x: -x[0])
    total = sum(n for n, _ in ranked)
    h_c = sum(n for n, _ in ranked[:c_cache]) / total
    rest = [n for n, tier in ranked[c_cache:] if tier == "nvme"]
    miss_nvme = sum(rest)
    h_r = sum(rest[:r_cache]) / miss_nvme if ctier == "gpu" and miss_nvme else 0.0
    return h_c, h_r, ("routing statistics of earlier runs: hit = share of selections of the most chosen experts "
                      "the cache holds (frequency-aware eviction)")


def prompt_ubatch(slots: int, moe: list, n_used: int) -> int:
    """Tokens per prompt ubatch the expert cache allows: llama.cpp's default when it holds a whole layer's
    experts (any ubatch's union fits), else as many tokens as it holds selections of. Only the default gives
    resident's numerics exactly: llama.cpp's CPU matmuls group a ubatch's rows per expert, so a split prompt
    can change the last bits of its logits (seen on K-quant ernie4_5-moe and GLM-4.7-Flash files)."""
    if slots >= max(u.n_expert for u in moe):
        return N_UBATCH
    return max(1, slots // max(1, n_used))

"""The placement planner: every tensor on ``gpu``, ``ram`` or ``nvme``, the mode, and the predicted speed.

Tiers. The *compute tier* is where kernels read weights: the GPU, or RAM on a machine without one (or with
``gpu_budget=0``; then the ``gpu`` tier stays empty). With a GPU, RAM holds the token embedding (llama.cpp
reads it on the CPU), pinned copies of weights uploaded per token, and pinned staging for NVMe reads (one per VRAM slot).
NVMe is the model file itself.

Cost model (decode, one token). Every weight byte a token touches is read by the compute device:
``t_compute = max(touched / compute_bandwidth, 2 * active_params / flops)``, independent of placement.
Weights not on the compute tier must also move each token: ``t_upload = (ram + nvme bytes) / upload_bps``
(GPU only) and ``t_disk = nvme bytes / disk_bps``. Without a GPU, ``compute_bandwidth`` is the measured rate
at which llama.cpp's CPU kernels consume weights in a decode (``cpu.decode_bps`` of ``hypura profile``, e.g. 8.8
GB/s of Q4_0 on the 2-core box against 25 GB/s of RAM bandwidth; it predicts the resident decode of the Q4_0
synthetic models there within 10%). Reads, uploads and compute are pipelined (prefetch), so
``t = max(t_compute, t_upload, t_disk)``, except where they measurably are not: expert streaming on the CPU
waits for a layer's reads after its router has chosen (``t = t_compute + t_disk``), and dense streaming's disk
idles where compute between two streamed layers outlasts what its free slots can take (``t = max(t_compute,
t_disk + idle)``, :func:`_disk_idle`). The largest term is the *bottleneck* (the serial sum is reported too, as
the pessimistic bound). A dense FFN layer that streams is read whole every token (a cyclic scan:
an LRU cache smaller than the set hits nothing). A routed-expert layer is read at ``n_used / n_expert`` of
its bytes (uniform routing); an expert cache of capacity ``c`` experts over ``S`` streamed experts hits
``c / S`` (uniform routing; caches independent), so misses are ``(1 - hit)`` of the touched bytes.
Real routing is skewed (a minority of experts takes most selections), so real hit rates are higher: given
routing statistics of earlier runs, the hit rate is the share of selections of the ``c`` most chosen
experts (what a frequency-aware cache keeps; :func:`expert_cache_model.hit_rates`).

Algorithm. (1) The always-resident part (attention, norms, router, shared experts, output, other; the
embedding in RAM) goes on the compute tier with the KV cache and compute buffers (``resident_overhead``,
from llama.cpp's no_alloc dry run, or the formula in :func:`estimate_overhead`). If every weight fits:
``full-resident``. (2) Otherwise a slot pool is reserved (a slot is the largest streamed unit, a dense
layer's FFN or ``n_used`` experts of a layer); if even one does not fit, :class:`PlanError` gives the
minimum. Dense streaming takes the fewest slots (2 to ``MAX_DENSE_SLOTS``) whose prediction is within ``SLOTS_TIE`` of
the fastest — a slot is a layer not resident, so more pay only where they keep the disk busy — and one only
when two do not fit: then reads and compute are serial and the prediction is their sum. (Never one where two
fit: on the CPU box one slot measured slower, 0.22 vs 0.26 tok/s.) On the CPU the dense layers left resident
are spread over the depth (:func:`_spread`), so that each covers a read. The prediction is monotone
across that step as long as reading one layer's FFN takes less than computing a token, true of every
real model (dozens of layers). For expert streaming the pool is expert cache either way (reads follow
the router), so steps (3)-(4) run with one slot and with two and the faster plan is kept. (3) Streamable units (a layer's dense FFN, a layer's routed experts)
are sorted by *touched bytes per token per byte* (density: 1 for dense FFN, n_used/n_expert for experts),
ties by layer, and packed greedily: compute tier first, then RAM, the rest on NVMe (a unit that does not
fit is skipped, smaller later ones may still fit). Routed-expert layers are not packed whole: once
anything streams, (4) the leftover compute-tier and RAM space becomes expert cache (whole experts) for the
MoE layers. Under uniform routing a cache of ``c`` experts is worth exactly ``c`` resident experts (the
hit rate is ``c / S``); under skewed routing a frequency-aware cache keeps the hot experts of *every*
layer and is worth more, so the cache is never the worse use of the space.

Optimality. Placement changes only the bytes moved per token, ``sum(density_u * bytes_u)`` over units
below the compute tier (upload) and over units on NVMe (disk). Both are linear, and the tiers are nested,
so the fractional relaxation is solved exactly by filling the faster tier with the densest bytes first
(the exchange argument of fractional knapsack), which minimises both terms at once and hence their max.
Units are whole layers, but all units of a class (every dense FFN layer, every MoE layer of a model) have
the same density, so within a class any whole-layer packing is as good as another; the only loss against
the fractional optimum is the unfilled remainder at each tier boundary: less than one dense layer per tier
for dense models, and for MoE less than one expert (the remainder becomes expert cache, which the uniform
model values exactly like resident experts). More budget can only move units up a tier, so the prediction
is monotone; the procedure has no randomness, so the plan is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .hardware_spec import HardwareSpec
from .model_info import ModelInfo
from .plan import Plan, PlanError
from .expert_cache_model import N_UBATCH, cache_slot_bytes, hit_rates, prompt_ubatch
from .prediction import predict
from .roles import STREAMABLE

MiB, GiB = 1 << 20, 1 << 30
FILE_EMBEDDING = "token_embd.weight"   # computed from the file when it is not also the output matrix (see above)
MAX_DENSE_SLOTS = 8             # the most slots a dense plan tries (each costs a layer of resident FFN)
# More slots are taken only for a predicted gain above this: every slot is a layer more read per token, and the
# model's error is larger than a few percent (Gemma 3 270M at 795.6 MB on the CPU box: 8 slots and every layer
# streamed were predicted 5% faster than 2 slots and 5 resident layers; measured 20.1 vs 20.4 tok/s, 40% more read).
SLOTS_TIE = 0.10


def estimate_overhead(m: ModelInfo, ctx: int) -> tuple[int, int]:
    """(KV cache, compute buffer) bytes by formula, for files llama.cpp cannot dry-run (header-only).

    KV (f16): ``2 * n_layer * ctx * n_head_kv * head_dim * 2``; DeepSeek-2 MLA caches one latent per token and
    layer: ``n_layer * ctx * (kv_lora_rank + rope_dim) * 2``. Compute buffer: f32 activations of one ubatch of
    512 tokens: ``4 * 512 * (n_vocab + 6 * n_embd + 2 * n_ff)`` (logits dominate) — an estimate.
    """
    if m.kv_lora_rank:
        kv = m.n_layer * ctx * (m.kv_lora_rank + m.rope_dim) * 2
    else:
        kv = 2 * m.n_layer * ctx * m.n_head_kv * m.head_dim * 2
    n_ff = max(m.n_ff, m.n_expert_used * _expert_ff(m))
    return kv, 4 * N_UBATCH * (m.n_vocab + 6 * m.n_embd + 2 * n_ff)


def _expert_ff(m: ModelInfo) -> int:
    t = next((t for t in m.tensors if t.role == "routed_expert" and len(t.shape) == 3), None)
    return 0 if t is None else min(t.shape[0], t.shape[1])


RAM_MARGIN = 256 * MiB   # what a run holds beyond its plan and its start, at most, measured (see default_budgets)


def default_budgets(hw: HardwareSpec) -> tuple[int, int]:
    """(gpu, ram) budgets: free memory minus a safety margin (GPU: max(512 MiB, 5%); RAM: max(RAM_MARGIN, 5%)).

    The RAM margin covers what the process holds beyond the plan (which counts weights, KV cache, compute
    buffers, slots and expert cache; not the expert streamer's read staging, one buffer of one expert per
    reader thread) and beyond what it held when the budget was measured (Python and llama.cpp's libraries are
    in that already), and the page cache a run charges to its cgroup. Measured (`unplanned_ram_bytes` of
    `hypura run --json`: peak RSS - RSS at start - the plan's RAM): -23 MB expert-streaming the 6.7 GB
    Mixtral-shaped file (264 MB of staging for its 99 MB experts included: the plan over-counts elsewhere),
    -151 MB the 4.6 GB Qwen3-30B-A3B-shaped one, -156 MB dense-streaming the 7 GB Llama-3-70B-shaped one,
    -211 MB Gemma 3 270M; a cgroup's peak was 70 MB above the RSS peak. With unified memory (Apple silicon) the GPU
    budget is carved out of available RAM.
    """
    gpu = 0 if hw.gpu is None else max(0, hw.gpu.memory_free - max(512 * MiB, hw.gpu.memory_free // 20))
    ram = hw.ram_available - max(RAM_MARGIN, hw.ram_available // 20)
    if hw.unified_memory:
        ram -= gpu
    return gpu, max(0, ram)


@dataclass
class _Unit:
    """A streamable unit: one layer's dense FFN or one layer's routed experts."""
    layer: int
    kind: str                   # "dense_ffn" | "routed_expert"
    names: list[str]
    nbytes: int
    touched: float              # bytes read per token when not cached
    expert_bytes: int = 0
    n_expert: int = 0
    tier: str = "nvme"
    slot: int = field(init=False)

    def __post_init__(self) -> None:
        # a pool slot of experts holds a token's (at least two: the CPU's repacked MUL_MAT_ID needs 3-D weights)
        self.slot = max(int(self.touched), 2 * self.expert_bytes) if self.kind == "routed_expert" else self.nbytes

    @property
    def density(self) -> float:
        return self.touched / self.nbytes


def _units(m: ModelInfo) -> list[_Unit]:
    groups: dict[tuple[int, str], list] = {}
    for t in m.tensors:
        if t.role in STREAMABLE and t.layer is not None:
            groups.setdefault((t.layer, t.role), []).append(t)
    units = []
    for (layer, kind), ts in sorted(groups.items()):
        nbytes = sum(t.nbytes for t in ts)
        if kind == "routed_expert":
            ebytes = nbytes // max(1, m.n_expert)
            units.append(_Unit(layer, kind, [t.name for t in ts], nbytes, ebytes * m.n_expert_used, ebytes,
                               m.n_expert))
        else:
            units.append(_Unit(layer, kind, [t.name for t in ts], nbytes, float(nbytes)))
    return sorted(units, key=lambda u: (-u.density, u.layer, u.kind))


def plan_placement(model_info: ModelInfo, hardware: HardwareSpec, gpu_budget: int | None = None,
                   ram_budget: int | None = None, ctx: int = 4096, resident_overhead: int | None = None,
                   routing: dict[int, dict[int, int]] | None = None) -> Plan:
    """Place every tensor of ``model_info`` on ``hardware`` within the budgets (bytes; None: measured free
    minus a margin). ``resident_overhead``: KV cache + compute buffers in bytes (None: formula).
    ``routing``: {layer: {expert: times chosen}} from earlier runs (None: uniform routing), for the expert
    caches' hit rates (see :func:`expert_cache_model.hit_rates`).
    Raises :class:`PlanError` when the budget cannot hold the always-resident part and one streaming slot.
    """
    m, hw = model_info, hardware
    d_gpu, d_ram = default_budgets(hw)
    gpu_b = d_gpu if gpu_budget is None else int(gpu_budget)
    ram_b = d_ram if ram_budget is None else int(ram_budget)
    if gpu_b < 0 or ram_b < 0:
        raise ValueError("budgets must not be negative")
    has_gpu = hw.gpu is not None and gpu_b > 0
    ctier = "gpu" if has_gpu else "ram"
    cap_c = gpu_b if has_gpu else ram_b
    if resident_overhead is None:
        kv, compute = estimate_overhead(m, ctx)
        overhead, source = kv + compute, f"formula (KV {kv} + compute {compute} bytes)"
    else:
        overhead, source = int(resident_overhead), "given (llama.cpp no_alloc dry run)"
    units = _units(m)
    streamable = {n for u in units for n in u.names}
    tiers: dict[str, str] = {}
    core_c = emb_ram = emb_copy = 0
    for t in m.tensors:
        if t.name in streamable:
            continue
        if has_gpu and t.role == "embedding":
            if t.name == "token_embd.weight" and m.tied_embeddings:   # output matmul on the GPU, input copy in RAM
                tiers[t.name], core_c, emb_copy = ctier, core_c + t.nbytes, t.nbytes
                emb_ram += emb_copy
            else:
                tiers[t.name], emb_ram = "ram", emb_ram + t.nbytes
        else:
            tiers[t.name], core_c = ctier, core_c + t.nbytes
    plan = Plan(model=m.path, architecture=m.architecture, hardware=hw.name, mode="full-resident",
                compute_tier=ctier, gpu_budget=gpu_b if has_gpu else 0, ram_budget=ram_b, ctx=ctx,
                resident_overhead=overhead, overhead_source=source)
    what = "GPU" if has_gpu else "RAM"
    if has_gpu and emb_ram > ram_b:
        raise PlanError(f"RAM budget {ram_b} bytes is too small: the token embedding needs {emb_ram} bytes")
    total_stream = sum(u.nbytes for u in units)
    if core_c + overhead + total_stream <= cap_c:       # everything fits on the compute tier
        for u in units:
            u.tier = ctier
        plan.reserved = {"ram": emb_copy} if emb_copy else {}
        return _finish(plan, m, hw, units, tiers, 0, 0, 0, 0, routing)
    # Streaming on the CPU: an untied token embedding stays in the file, read a row a token from the page cache
    # (hypura_streaming's FileMap), and its bytes become resident FFN or expert cache.
    in_file = [t for t in m.tensors if not has_gpu and t.name == FILE_EMBEDDING and not m.tied_embeddings]
    for t in in_file:
        tiers[t.name], core_c = "nvme", core_c - t.nbytes
    slot = max(u.slot for u in units) if units else 0
    minimum = core_c + overhead + slot
    if cap_c < minimum or not units:
        raise PlanError(
            f"{what} budget {cap_c} bytes ({cap_c / GiB:.2f} GiB) is too small for {m.path}: the always-resident "
            f"part needs {core_c + overhead} bytes (weights {core_c}, KV cache and compute buffers {overhead}) "
            f"plus one streaming slot of {slot} bytes: at least {minimum} bytes ({minimum / GiB:.2f} GiB)")
    def place(n_slots: int, slot: int) -> Plan:
        """Steps (3)-(4) with a pool of `n_slots` slots of `slot` bytes, on a copy of the plan so far."""
        plan = Plan.from_dict(template)
        ctier = plan.compute_tier
        if has_gpu and n_slots == 2 and ram_b - emb_ram < 2 * slot:   # each VRAM slot has pinned staging
            raise PlanError(f"RAM budget {ram_b} bytes cannot stage two slots of {slot} bytes")
        left_c = cap_c - core_c - overhead - n_slots * slot
        for staging in ((0, n_slots * slot) if has_gpu else (0,)):   # pinned staging: one per VRAM slot
            left_r = ram_b - emb_ram - staging if has_gpu else 0
            lc, lr = left_c, left_r
            for u in (units if has_gpu else _spread(units)):
                if u.kind == "routed_expert":   # its share of each tier becomes expert cache (step 4)
                    u.tier = "nvme"
                elif u.nbytes <= lc:
                    u.tier, lc = ctier, lc - u.nbytes
                elif has_gpu and u.nbytes <= lr:
                    u.tier, lr = "ram", lr - u.nbytes
                else:
                    u.tier = "nvme"
            if not any(u.tier == "nvme" for u in units) or staging:
                break
        if has_gpu and lr < 0:
            raise PlanError(f"RAM budget {ram_b} bytes is too small: streaming from NVMe needs the embedding "
                            f"({emb_ram}) plus pinned staging ({n_slots} x {slot}): at least "
                            f"{emb_ram + n_slots * slot} bytes")
        plan.n_slots, plan.slot_bytes = n_slots, slot
        plan.reserved = {ctier: n_slots * slot, **({"ram": staging} if has_gpu and staging else {})}
        if emb_copy:
            plan.reserved["ram"] = plan.reserved.get("ram", 0) + emb_copy
        return _finish(plan, m, hw, units, dict(tiers), lc, lr if has_gpu else 0, n_slots, slot, routing)

    template = plan.to_dict()
    moe = any(u.kind == "routed_expert" for u in units)
    # A MoE model with dense FFN layers: also a pool sized for experts only, where those layers must then stay
    # resident (with the larger slot they may stream beside the experts, through the pool).
    slots = [slot] + sorted({max(u.slot for u in units if u.kind == "routed_expert")} - {slot}) if moe else [slot]
    plans, error = [], None
    most = min(MAX_DENSE_SLOTS, sum(u.kind == "dense_ffn" for u in units)) if not moe else 2
    for n_slots in range(max(2, most), 0, -1) if cap_c >= minimum + slot else (1,):
        for size in slots:
            try:
                p = place(n_slots, size)
                if size != slot and any(u.kind == "dense_ffn" and tier != p.compute_tier
                                        for u in units for tier in [p.tensors[u.names[0]]]):
                    raise PlanError("a dense FFN layer would stream without a slot")
                plans.append(p)
            except PlanError as exc:
                error = error or exc
        if plans and not moe and n_slots == 2:   # dense: never one slot where two can be placed (see step 2)
            break
    if not plans:
        raise error
    if not moe:   # dense: the fewest slots within SLOTS_TIE of the fastest prediction (see SLOTS_TIE)
        best = max(p.predicted_tps for p in plans)
        return min((p for p in plans if p.predicted_tps >= (1 - SLOTS_TIE) * best), key=lambda p: p.n_slots)
    return max(plans, key=lambda p: (p.predicted_tps, p.n_slots))


def _spread(units: list[_Unit]) -> list[_Unit]:
    """`units` in packing order with the dense FFN layers of equal density interleaved: the first k of them in this
    order are spread evenly over the model's depth for every k (bit-reversed rank, the van der Corput order), so
    the layers left resident sit between streamed ones. On the CPU a resident layer's compute is as long as a
    streamed layer's read: spread out, each one covers a read; packed at the front, the disk idles through all
    of them once the slots are full."""
    dense = sorted((u for u in units if u.kind == "dense_ffn"), key=lambda u: u.layer)
    rank = {id(u): _bit_reversed(i, len(dense)) for i, u in enumerate(dense)}
    return sorted(units, key=lambda u: (-u.density, rank.get(id(u), 0.0), u.layer, u.kind))


def _bit_reversed(i: int, n: int) -> float:
    """i's place in [0, 1) in the van der Corput order over n items (i's bits reversed)."""
    bits = max(1, (n - 1).bit_length())
    return int(format(i, f"0{bits}b")[::-1], 2) / (1 << bits)


def _finish(plan: Plan, m: ModelInfo, hw: HardwareSpec, units: list[_Unit], tiers: dict[str, str],
            left_c: int, left_r: int, n_slots: int, slot: int,
            routing: dict[int, dict[int, int]] | None = None) -> Plan:
    ctier = plan.compute_tier
    for u in units:
        for n in u.names:
            tiers[n] = u.tier
    by_name = {t.name: t for t in m.tensors}
    plan.tensors = {t.name: tiers[t.name] for t in m.tensors}
    plan.tiers = {"gpu": 0, "ram": 0, "nvme": 0}
    for name, tier in plan.tensors.items():
        plan.tiers[tier] += by_name[name].nbytes
    streamed = [u for u in units if u.tier != ctier]
    moe = [u for u in streamed if u.kind == "routed_expert"]
    ebytes = cache_slot_bytes(moe, by_name, host=ctier == "ram")
    s_all = sum(u.n_expert for u in moe)
    s_nvme = sum(u.n_expert for u in moe if u.tier == "nvme")
    dense_streamed = [u for u in streamed if u.kind == "dense_ffn"]
    if moe and dense_streamed:   # both stream: the pool's slots hold dense layers, the rest is expert cache
        dslot = max(u.nbytes for u in dense_streamed)
        left_c += n_slots * (slot - dslot)
        plan.reserved[ctier] -= n_slots * (slot - dslot)
        plan.slot_bytes = slot = dslot
    c_cache = min(s_all, left_c // ebytes) if ebytes else 0
    if moe and dense_streamed and c_cache < max(2, m.n_expert_used):
        raise PlanError(f"{'GPU' if ctier == 'gpu' else 'RAM'} budget too small: dense FFN layers stream beside the "
                        f"experts, and the {left_c} bytes left hold {c_cache} experts, fewer than the "
                        f"{m.n_expert_used} a token uses")
    r_cache = min(s_nvme, left_r // ebytes) if ebytes and ctier == "gpu" else 0
    h_c, h_r, hit_model = hit_rates(routing, moe, c_cache, r_cache, s_all, s_nvme, ctier)
    ram_tok = nvme_tok = 0.0
    for u in streamed:
        if u.kind == "dense_ffn":
            ram_tok += u.touched if u.tier == "ram" else 0
            nvme_tok += u.touched if u.tier == "nvme" else 0
        elif u.tier == "ram":
            ram_tok += u.touched * (1 - h_c)
        elif ctier == "gpu":
            miss = u.touched * (1 - h_c)
            ram_tok, nvme_tok = ram_tok + miss * h_r, nvme_tok + miss * (1 - h_r)
        else:                                   # CPU only: the compute tier's leftover is the expert cache
            nvme_tok += u.touched * (1 - h_c)
    if c_cache:
        plan.reserved[ctier] = plan.reserved.get(ctier, 0) + c_cache * ebytes
    if r_cache:
        plan.reserved["ram"] = plan.reserved.get("ram", 0) + r_cache * ebytes
    plan.expert_cache = {"experts": {ctier: c_cache, **({"ram": r_cache} if ctier == "gpu" else {})},
                         "expert_bytes": ebytes, "expert_bytes_by_layer": {str(u.layer): u.expert_bytes for u in moe},
                         "hit_rate": {ctier: h_c, **({"ram": h_r} if ctier == "gpu" else {})},
                         "model": hit_model}
    if moe and ebytes:   # every slot: the cache and the pool (n_used experts each)
        slots = c_cache + (0 if dense_streamed else n_slots * slot // ebytes)   # else the pool is experts' too
        plan.expert_cache.update(slots=slots, layer_experts=max(u.n_expert for u in moe),
                                 prompt_ubatch=prompt_ubatch(slots, moe, m.n_expert_used))
    if any(u.kind == "routed_expert" for u in streamed):
        plan.mode = "expert-streaming"
    elif streamed:
        plan.mode = "dense-ffn-streaming"
    plan.layers = _layer_map(m, units, plan.tensors)
    plan.resident_ffn_layers = sorted(u.layer for u in units if u.tier == ctier)
    plan.streamed_layers = {tier: sorted(u.layer for u in units if u.tier == tier) for tier in ("ram", "nvme")
                            if tier != ctier}
    plan.ram_bytes_per_token = int(ram_tok) if ctier == "gpu" else 0
    plan.nvme_bytes_per_token = int(nvme_tok)
    plan.touched_bytes_per_token = m.bytes_per_token()
    predict(plan, m, hw, ebytes)
    return plan


def _layer_map(m: ModelInfo, units: list[_Unit], tensors: dict[str, str]) -> list[dict]:
    rows: dict[int, dict] = {}
    for t in m.tensors:
        if t.layer is None:
            continue
        r = rows.setdefault(t.layer, {"layer": t.layer, "resident": None, "resident_bytes": 0,
                                      "ffn": None, "ffn_kind": None, "ffn_bytes": 0})
        if t.name in {n for u in units if u.layer == t.layer for n in u.names}:
            continue
        r["resident"], r["resident_bytes"] = tensors[t.name], r["resident_bytes"] + t.nbytes
    for u in units:
        r = rows[u.layer]
        r["ffn"], r["ffn_kind"], r["ffn_bytes"] = u.tier, u.kind, r["ffn_bytes"] + u.nbytes
    return [rows[k] for k in sorted(rows)]

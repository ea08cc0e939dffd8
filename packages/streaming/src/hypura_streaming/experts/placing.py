"""Placing an expert streamer's experts at load: lay the streamed expert tensors out, allocate the cache memory,
re-point the tensors into it, and open the repacked-experts file where the CPU keeps experts repacked."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..cache import ExpertCache
from ..loader import OwnedLoad, model_files
from ..repacked_file import open_experts_file
from ..spec import EXPS
from .layout import ExpertLayout, ExpertTensor, kind_of
from .memory import ExpertMemory
from .reads import ExpertReads
from .stages import KindOrder, base_kind

log = logging.getLogger(__name__)


def place(st, owned: OwnedLoad) -> None:
    """Lay the streamed tensors out, allocate the memory, and re-point the tensors into the cache. On the
    CPU, expert matrices of a type llama.cpp's default load repacks (CPU_REPACK; the owned load's
    decision) are kept repacked, as the resident reference computes them."""
    tensors, repack = [], {}
    mine = {name: t for name, t in owned.streamed.items() if EXPS.match(name)}
    for name, t in mine.items():
        layer, kind, suffix = EXPS.match(name).groups()
        info = owned.index.tensors[name]
        buft = owned.repack_buffer_type(name) if st.device is None else None
        if buft is not None:
            repack[buft.name] = buft
        et = ExpertTensor(name, int(layer), kind_of(kind, suffix), tuple(int(x) for x in t.ne),
                          tuple(int(x) for x in t.nb), info.size, info.parts, buft is not None)
        tensors.append(et if info.parts else replace(et, parts=((info.offset, et.nb[et.expert_dim]),)))
    if len(repack) > 1:
        raise ValueError(f"{st.path}: experts repacked for several CPU buffer types ({', '.join(repack)})")
    lay = st.layout = ExpertLayout.build(st.path, st.layers, tensors, st.n_slots, st.ram_slots,
                                           host=st.device is None)
    st.n_expert = lay.n_expert
    if lay.n_slots != st.n_slots:
        st.n_slots = lay.n_slots
        st.cache = ExpertCache(st.n_slots, st.policy)
    st.ram_slots = lay.ram_slots
    if st.ram_slots:
        st.ram_cache = ExpertCache(st.ram_slots, st.policy)
    st.memory = ExpertMemory(lay, st.device, n_staging=st.reader.threads,
                               repack_buft=next(iter(repack.values()), None))
    for name, t in mine.items():
        layer, kind, suffix = EXPS.match(name).groups()
        st.memory.repoint(int(layer), kind_of(kind, suffix), t)
    st.memory.resize_side_tensors(owned, st._pos)
    st._order = KindOrder(frozenset(base_kind(k) for k in lay.kinds))
    st.reads = ExpertReads(lay, st.memory, st.reader, st.cache, st.ram_cache)
    if lay.repacked and st.repacked_dir is not None:
        st.repacked_file, st.repacked_file_reason = open_experts_file(
            Path(st.repacked_dir), model_files(st.path), lay, st.memory, st.reads, st.reader)
        st.reads.repacked, st.reads.converted = st.repacked_file, 0   # (building converted them all)
        if st.repacked_file is None:
            log.warning("repacked experts: %s; converting them as they are read", st.repacked_file_reason)

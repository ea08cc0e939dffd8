"""The expert cache's bookkeeping: which (layer, expert) sits in which slot, eviction that never
touches a slot the current layer uses, and honest hit accounting.

Eviction. Layers are visited in a cycle, so plain LRU degenerates: an expert's reuse distance is a
whole pass (every other layer's experts in between), and a cache smaller than one pass's working set
hits nothing. The default policy is therefore frequency-aware (``lfu``): the victim is the cached
expert chosen least often (counts over every expert seen, halved every ``decay_every`` lookups so that
a change of topic can move the hot set), ties broken by least recent use. Under skewed routing it keeps
each layer's hot experts; under uniform routing it keeps a stable subset, so the hit rate approaches
capacity / experts served, the planner's model. ``lru`` is kept for comparison.

Pure Python and deterministic, so its numbers can be checked against a hand-computed trace.
A *selection* is one (layer, expert) a forward pass needs (distinct per layer and pass); it is a
hit when the expert is already in the cache, a miss when it must be read, and *prefetched* when it is
in the cache because a speculative read (``reserve``) put it there for this use: read from disk all the
same, so it never counts as a hit.
"""
from __future__ import annotations

import heapq
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    prefetched: int = 0    # selections served by a speculative read (not hits: they were read)
    by_layer: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses + self.prefetched
        return self.hits / total if total else 0.0

    def hit_rate_by_layer(self) -> dict[int, float]:
        return {layer: (h / (h + m + p) if h + m + p else 0.0) for layer, (h, m, p) in sorted(self.by_layer.items())}


class ExpertCache:
    """`n_slots` slots shared by all streamed layers over (layer, expert); `policy` "lfu" or "lru"."""

    def __init__(self, n_slots: int, policy: str = "lfu", decay_every: int = 4096) -> None:
        if n_slots < 1:
            raise ValueError("the expert cache needs at least one slot")
        if policy not in ("lfu", "lru"):
            raise ValueError(f"unknown expert cache policy {policy!r} (lfu, lru)")
        self.n_slots = n_slots
        self.policy = policy
        self.decay_every = decay_every
        self._where: OrderedDict[tuple[int, int], int] = OrderedDict()   # key -> slot, LRU order
        self._free = list(range(n_slots - 1, -1, -1))
        self._freq: dict[tuple[int, int], int] = {}
        self._lookups = 0
        # LFU victims come from a lazy heap of (frequency, recency tick, key): an entry is current only
        # while its key is cached with that frequency and tick, so stale ones are skipped when popped.
        self._tick: dict[tuple[int, int], int] = {}
        self._clock = 0
        self._heap: list[tuple[int, int, tuple[int, int]]] = []
        self._prefetched: set[tuple[int, int]] = set()   # reserved by a speculative read, not looked up since
        self.stats = CacheStats()

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._where

    def lookup(self, layer: int, experts: list[int]) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """Slots for the distinct `experts` one layer needs now.

        Returns (expert → slot, [(expert, slot) to read]). Raises ValueError if the layer needs
        more distinct experts than there are slots (the caller sizes ubatches to prevent it)."""
        wanted = list(dict.fromkeys(experts))
        if len(wanted) > self.n_slots:
            raise ValueError(f"layer {layer} needs {len(wanted)} distinct experts at once; the cache has "
                             f"{self.n_slots} slots")
        self._count(layer, wanted)
        mapping: dict[int, int] = {}
        prefetched = 0
        for e in wanted:  # hits first, so they are protected from this layer's evictions
            key = (layer, e)
            if key in self._where:
                self._where.move_to_end(key)
                self._touch(key)
                mapping[e] = self._where[key]
                if key in self._prefetched:
                    self._prefetched.discard(key)
                    prefetched += 1
        protected = set(mapping.values())
        to_read = []
        for e in wanted:
            if e in mapping:
                continue
            slot = self._take_slot(protected)
            self._where[(layer, e)] = slot
            self._touch((layer, e))
            mapping[e] = slot
            protected.add(slot)
            to_read.append((e, slot))
        hits, misses = len(wanted) - len(to_read) - prefetched, len(to_read)
        self.stats.hits += hits
        self.stats.misses += misses
        self.stats.prefetched += prefetched
        row = self.stats.by_layer[layer]
        row[0], row[1], row[2] = row[0] + hits, row[1] + misses, row[2] + prefetched
        return mapping, to_read

    def reserve(self, layer: int, expert: int, protected: set[int], displace: bool = False) -> int | None:
        """A slot for a speculative read of (layer, expert), evicting by the policy but never a slot in
        `protected`; not counted as a hit, miss or use. None when the expert is cached already or every
        slot is protected; with the LFU policy also when the victim was chosen at least as often as the
        guess, unless `displace`. The key is cached from now on: the caller fills the slot before anyone
        looks it up, or `invalidate`s it."""
        key = (layer, expert)
        if key in self._where or (not self._free and len(protected) >= self.n_slots):
            return None
        if not self._free and self.policy == "lfu":
            victim = self._lfu_victim(protected)
            if victim is None or (not displace and self._freq.get(victim, 0) >= self._freq.get(key, 0)):
                return None       # a guess never displaces an expert chosen at least as often
        slot = self._take_slot(protected)
        self._where[key] = slot
        self._touch(key)
        self._prefetched.add(key)
        return slot

    def _count(self, layer: int, wanted: list[int]) -> None:
        self._lookups += 1
        if self._lookups % self.decay_every == 0:
            self._freq = {k: v >> 1 for k, v in self._freq.items() if v > 1}
            self._rebuild()
        for e in wanted:
            self._freq[(layer, e)] = self._freq.get((layer, e), 0) + 1

    def frequency(self, layer: int, expert: int) -> int:
        return self._freq.get((layer, expert), 0)

    def _touch(self, key: tuple[int, int]) -> None:
        """`key` was just used or inserted (it is now the most recent): record its heap entry."""
        self._clock += 1
        self._tick[key] = self._clock
        if self.policy == "lfu":
            heapq.heappush(self._heap, (self._freq.get(key, 0), self._clock, key))
            if len(self._heap) > 4 * len(self._where) + 64:
                self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [(self._freq.get(k, 0), self._tick[k], k) for k in self._where]
        heapq.heapify(self._heap)

    def _take_slot(self, protected: set[int]) -> int:
        if self._free:
            return self._free.pop()
        if self.policy == "lru":
            for key, slot in self._where.items():  # least recently used first
                if slot not in protected:
                    del self._where[key]
                    self._prefetched.discard(key)
                    return slot
            raise AssertionError("unreachable: more protected slots than slots")
        key = self._lfu_victim(protected)
        if key is None:
            raise AssertionError("unreachable: more protected slots than slots")
        self._prefetched.discard(key)
        return self._where.pop(key)     # its heap entry is stale from now on

    def _lfu_victim(self, protected: set[int]) -> tuple[int, int] | None:
        """The key LFU evicts next outside `protected`: least frequently chosen, ties to the least recently
        used (the smaller tick). Pops the stale heap entries it meets; leaves the heap otherwise as it was."""
        aside = []
        try:
            while self._heap:
                f, tick, key = self._heap[0]
                slot = self._where.get(key)
                if slot is None or self._tick.get(key) != tick or self._freq.get(key, 0) != f:
                    heapq.heappop(self._heap)      # stale: the key moved, was evicted or counted since
                elif slot in protected:
                    aside.append(heapq.heappop(self._heap))
                else:
                    return key
            return None
        finally:
            for entry in aside:
                heapq.heappush(self._heap, entry)

    def seed(self, counts: dict[tuple[int, int], int]) -> None:
        """Start the frequency counts from earlier runs' routing (warm start)."""
        for key, n in counts.items():
            self._freq[key] = max(self._freq.get(key, 0), int(n))
        self._rebuild()

    def preload(self, keys: list[tuple[int, int]]) -> list[tuple[tuple[int, int], int]]:
        """Place `keys` in free slots, in order, until none is free; not counted as hits or misses.
        Returns [(key, slot)] for the caller to fill."""
        placed = []
        for key in keys:
            if not self._free:
                break
            if key not in self._where:
                slot = self._free.pop()
                self._where[key] = slot
                self._touch(key)
                placed.append((key, slot))
        return placed

    def resident(self) -> dict[tuple[int, int], int]:
        """(layer, expert) → slot of everything cached now."""
        return dict(self._where)

    def invalidate(self, slots: list[int]) -> None:
        """Forget the contents of slots whose fill failed."""
        bad = set(slots)
        for key in [k for k, s in self._where.items() if s in bad]:
            del self._where[key]
            self._prefetched.discard(key)
        held = set(self._where.values())
        self._free.extend(s for s in sorted(bad) if s not in held and s not in self._free)

"""The expert cache's bookkeeping: which (layer, expert) sits in which slot, LRU eviction that
never touches a slot the current layer uses, and honest hit accounting.

Pure Python and deterministic, so its numbers can be checked against a hand-computed trace.
A *selection* is one (layer, expert) a forward pass needs (distinct per layer and pass); it is a
hit when the expert is already in the cache, a miss when it must be read.
"""
from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    by_layer: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # [hits, misses]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def hit_rate_by_layer(self) -> dict[int, float]:
        return {layer: (h / (h + m) if h + m else 0.0) for layer, (h, m) in sorted(self.by_layer.items())}


class ExpertCache:
    """`n_slots` slots shared by all streamed layers, LRU over (layer, expert)."""

    def __init__(self, n_slots: int) -> None:
        if n_slots < 1:
            raise ValueError("the expert cache needs at least one slot")
        self.n_slots = n_slots
        self._where: OrderedDict[tuple[int, int], int] = OrderedDict()   # key -> slot, LRU order
        self._free = list(range(n_slots - 1, -1, -1))
        self.stats = CacheStats()

    def lookup(self, layer: int, experts: list[int]) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """Slots for the distinct `experts` one layer needs now.

        Returns (expert → slot, [(expert, slot) to read]). Raises ValueError if the layer needs
        more distinct experts than there are slots (the caller sizes ubatches to prevent it)."""
        wanted = list(dict.fromkeys(experts))
        if len(wanted) > self.n_slots:
            raise ValueError(f"layer {layer} needs {len(wanted)} distinct experts at once; the cache has "
                             f"{self.n_slots} slots")
        mapping: dict[int, int] = {}
        for e in wanted:  # hits first, so they are protected from this layer's evictions
            key = (layer, e)
            if key in self._where:
                self._where.move_to_end(key)
                mapping[e] = self._where[key]
        protected = set(mapping.values())
        to_read = []
        for e in wanted:
            if e in mapping:
                continue
            slot = self._take_slot(protected)
            self._where[(layer, e)] = slot
            mapping[e] = slot
            protected.add(slot)
            to_read.append((e, slot))
        hits, misses = len(wanted) - len(to_read), len(to_read)
        self.stats.hits += hits
        self.stats.misses += misses
        self.stats.by_layer[layer][0] += hits
        self.stats.by_layer[layer][1] += misses
        return mapping, to_read

    def _take_slot(self, protected: set[int]) -> int:
        if self._free:
            return self._free.pop()
        for key, slot in self._where.items():  # least recently used first
            if slot not in protected:
                del self._where[key]
                return slot
        raise AssertionError("unreachable: more protected slots than slots")

    def invalidate(self, slots: list[int]) -> None:
        """Forget the contents of slots whose fill failed."""
        bad = set(slots)
        for key in [k for k, s in self._where.items() if s in bad]:
            del self._where[key]
        held = set(self._where.values())
        self._free.extend(s for s in sorted(bad) if s not in held and s not in self._free)

"""Hit-rate accounting of the expert cache against a hand-computed trace."""
from __future__ import annotations

import pytest

from hypura_streaming import ExpertCache


def test_hand_computed_trace_lru():
    c = ExpertCache(3, policy="lru")
    # 1. layer 0 needs experts 1, 2: both read, into slots 0 and 1
    assert c.lookup(0, [1, 2, 1]) == ({1: 0, 2: 1}, [(1, 0), (2, 1)])
    # 2. layer 1 needs expert 1: (1, 1) is another key than (0, 1): read into slot 2
    assert c.lookup(1, [1]) == ({1: 2}, [(1, 2)])
    # 3. layer 0 needs 2 (hit, slot 1) and 3: LRU victim is (0, 1) in slot 0
    assert c.lookup(0, [2, 3]) == ({2: 1, 3: 0}, [(3, 0)])
    # 4. layer 1 needs 1 (hit, slot 2) and 4: LRU is now (0, 2) in slot 1; slot 2 is protected
    assert c.lookup(1, [4, 1]) == ({1: 2, 4: 1}, [(4, 1)])
    assert (c.stats.hits, c.stats.misses) == (2, 5)
    assert c.stats.hit_rate == pytest.approx(2 / 7)
    assert c.stats.hit_rate_by_layer() == {0: pytest.approx(1 / 4), 1: pytest.approx(1 / 3)}


def test_hand_computed_trace_lfu():
    c = ExpertCache(3)  # frequency-aware, the default
    assert c.lookup(0, [1, 2]) == ({1: 0, 2: 1}, [(1, 0), (2, 1)])       # f(0,1)=f(0,2)=1
    assert c.lookup(1, [1]) == ({1: 2}, [(1, 2)])                        # f(1,1)=1
    # (0,1) hits (f=2); (0,3) needs a slot: (0,2) and (1,1) both f=1, (0,2) is older: slot 1
    assert c.lookup(0, [1, 3]) == ({1: 0, 3: 1}, [(3, 1)])
    # (1,2): candidates (1,1) f=1, (0,1) f=2, (0,3) f=1 in LRU order (1,1), (0,1), (0,3): evict (1,1)
    assert c.lookup(1, [2]) == ({2: 2}, [(2, 2)])
    # (1,4): order (0,1) f=2, (0,3) f=1, (1,2) f=1: LFU evicts (0,3) in slot 1 (LRU would evict (0,1))
    assert c.lookup(1, [4]) == ({4: 1}, [(4, 1)])
    assert c.lookup(0, [1]) == ({1: 0}, [])                              # the frequent expert stayed
    assert (c.stats.hits, c.stats.misses) == (2, 6)
    assert c.stats.hit_rate_by_layer() == {0: pytest.approx(2 / 5), 1: pytest.approx(0 / 3)}
    assert c.frequency(0, 1) == 3 and c.frequency(1, 3) == 0


def test_hand_computed_trace_with_speculative_reads():
    """`reserve` places a guess without counting it; its first use counts as prefetched (read, not a hit);
    a guess never takes a protected slot, and an unused guess is an ordinary eviction candidate."""
    c = ExpertCache(3, policy="lru")
    assert c.lookup(0, [1, 2]) == ({1: 0, 2: 1}, [(1, 0), (2, 1)])
    # layer 0 computes on slots 0, 1: a guess for layer 1 takes the free slot 2
    assert c.reserve(1, 5, protected={0, 1}) == 2
    assert c.reserve(1, 5, protected={0, 1}) is None          # already placed
    assert c.reserve(1, 6, protected={0, 1, 2}) is None       # every slot busy: no guess
    # layer 1 needs 5 (the guess: prefetched) and 7 (a miss; LRU victim (0,1) in slot 0, slot 2 protected)
    assert c.lookup(1, [5, 7]) == ({5: 2, 7: 0}, [(7, 0)])
    assert (c.stats.hits, c.stats.misses, c.stats.prefetched) == (0, 3, 1)
    assert c.lookup(1, [5]) == ({5: 2}, [])                   # its second use is a plain hit
    assert (c.stats.hits, c.stats.misses, c.stats.prefetched) == (1, 3, 1)
    assert c.stats.hit_rate == pytest.approx(1 / 5)
    assert c.stats.hit_rate_by_layer() == {0: 0.0, 1: pytest.approx(1 / 3)}
    # a wrong guess (never looked up) is evicted like anything else; a failed one is forgotten
    assert c.reserve(0, 9, protected={2}) == 1                # LRU victim (0,2) in slot 1; LRU: (1,7) (1,5) (0,9)
    assert c.lookup(0, [3]) == ({3: 0}, [(3, 0)])             # evicts (1,7)
    assert c.lookup(0, [8]) == ({8: 2}, [(8, 2)])             # evicts (1,5)
    assert c.lookup(0, [10]) == ({10: 1}, [(10, 1)])          # evicts the unused guess (0,9)
    assert (0, 9) not in c and c.stats.prefetched == 1
    assert c.reserve(0, 4, protected=set()) == 0 and (0, 4) in c
    c.invalidate([0])
    assert (0, 4) not in c and c.lookup(0, [4]) == ({4: 0}, [(4, 0)])


def test_counts_decay_so_the_hot_set_can_move():
    c = ExpertCache(2, decay_every=4)
    for _ in range(3):
        c.lookup(0, [7])
    assert c.frequency(0, 7) == 3
    c.lookup(0, [8])          # the 4th lookup halves every count before counting: 7 -> 1, then 8 -> 1
    assert (c.frequency(0, 7), c.frequency(0, 8)) == (1, 1)


def test_lfu_beats_lru_on_a_cyclic_skewed_trace():
    """8 layers visited in order, 2 of 8 experts each, expert 0 of every layer chosen 80% of the time,
    12 slots (less than one pass's 16 selections): LRU's reuse distance is a whole pass, so it hits
    nothing; LFU keeps the hot experts."""
    import random

    rates = {}
    for policy in ("lru", "lfu"):
        rng = random.Random(1)
        c = ExpertCache(12, policy=policy)
        for _ in range(300):
            for layer in range(8):
                first = 0 if rng.random() < 0.8 else rng.randrange(1, 8)
                second = rng.choice([e for e in range(8) if e != first])
                c.lookup(layer, [first, second])
        rates[policy] = c.stats.hit_rate
    assert rates["lru"] < 0.05 and rates["lfu"] > 0.35, rates


def test_the_current_layer_is_never_evicted_by_its_own_misses():
    for policy in ("lru", "lfu"):
        c = ExpertCache(2, policy=policy)
        c.lookup(0, [5, 6])
        c.lookup(0, [5])
        mapping, to_read = c.lookup(0, [6, 7])   # 6 hits; 7 must evict 5 (even when 5 is more frequent)
        assert mapping == {6: 1, 7: 0} and to_read == [(7, 0)]


def test_more_distinct_experts_than_slots_is_an_error():
    with pytest.raises(ValueError, match="distinct experts"):
        ExpertCache(2).lookup(3, [0, 1, 2])


def test_invalidated_slots_are_read_again():
    c = ExpertCache(2)
    c.lookup(0, [1, 2])
    c.invalidate([0])
    mapping, to_read = c.lookup(0, [1, 2])
    assert to_read == [(1, 0)] and mapping == {1: 0, 2: 1}


class _Reference:
    """The LFU policy stated plainly (a linear scan per eviction), to check the heap against."""

    def __init__(self, n_slots, decay_every):
        from collections import OrderedDict

        self.where, self.free, self.freq, self.n, self.decay_every = OrderedDict(), list(range(n_slots - 1, -1, -1)), {}, 0, decay_every

    def lookup(self, layer, experts):
        wanted = list(dict.fromkeys(experts))
        self.n += 1
        if self.n % self.decay_every == 0:
            self.freq = {k: v >> 1 for k, v in self.freq.items() if v > 1}
        for e in wanted:
            self.freq[(layer, e)] = self.freq.get((layer, e), 0) + 1
        mapping = {}
        for e in wanted:
            if (layer, e) in self.where:
                self.where.move_to_end((layer, e))
                mapping[e] = self.where[(layer, e)]
        protected, to_read = set(mapping.values()), []
        for e in wanted:
            if e in mapping:
                continue
            if self.free:
                slot = self.free.pop()
            else:
                cands = [(self.freq.get(k, 0), i, k) for i, (k, s) in enumerate(self.where.items()) if s not in protected]
                victim = min(cands)[2]
                slot = self.where.pop(victim)
            self.where[(layer, e)] = slot
            mapping[e] = slot
            protected.add(slot)
            to_read.append((e, slot))
        return mapping, to_read


@pytest.mark.parametrize("seed", range(5))
def test_lfu_heap_decides_like_the_plain_policy(seed):
    import random

    rng = random.Random(seed)
    slots, decay = rng.choice([(3, 7), (8, 50), (20, 4096)])
    c, ref = ExpertCache(slots, decay_every=decay), _Reference(slots, decay)
    for _ in range(3000):
        layer = rng.randrange(6)
        experts = [min(int(rng.expovariate(0.4)), 15) for _ in range(rng.randint(1, min(3, slots)))]
        assert c.lookup(layer, experts) == ref.lookup(layer, experts)

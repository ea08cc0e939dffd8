"""Hit-rate accounting of the expert cache against a hand-computed trace."""
from __future__ import annotations

import pytest

from hypura_streaming import ExpertCache


def test_hand_computed_trace():
    c = ExpertCache(3)
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


def test_the_current_layer_is_never_evicted_by_its_own_misses():
    c = ExpertCache(2)
    c.lookup(0, [5, 6])
    mapping, to_read = c.lookup(0, [6, 7])   # 6 hits; 7 must evict 5, never 6
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

"""The bounded mapping behind the Matcher's feature cache and the fixed path's per-size state."""
from __future__ import annotations

import pytest

from superglue_ros.inference.lru import LRU


def test_the_least_recently_used_entry_goes_first_and_on_evict_sees_every_entry_that_goes():
    evicted: list[int] = []
    lru: LRU[str, int] = LRU(2, on_evict=evicted.append)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recently used
    assert lru.get_or_make("c", lambda: 3) == 3
    assert list(lru) == ["a", "c"] and evicted == [2] and lru.get("b") is None
    assert lru.get_or_make("a", lambda: pytest.fail("a kept entry is made again")) == 1
    lru.clear()
    assert len(lru) == 0 and evicted == [2, 3, 1]


def test_a_value_replaced_under_its_key_goes_through_on_evict():
    evicted: list[list[int]] = []
    lru: LRU[str, list[int]] = LRU(2, on_evict=evicted.append)
    first, second = [1], [2]
    lru.put("a", first)
    lru.put("a", first)  # the same value again: nothing goes
    lru.put("a", second)
    assert evicted == [first] and evicted[0] is first and lru.get("a") is second


def test_capacity_zero_keeps_nothing():
    evicted: list[int] = []
    lru: LRU[str, int] = LRU(0, on_evict=evicted.append)
    assert lru.get_or_make("a", lambda: 1) == 1
    assert len(lru) == 0 and evicted == [1]

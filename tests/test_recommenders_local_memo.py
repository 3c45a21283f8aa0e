"""The per-process memo serving keeps placements, trending slices and visitors in."""

from __future__ import annotations

import time

from recommenders.serving.cache import LocalMemo


def test_an_entry_lives_its_ttl():
    memo = LocalMemo(ttl=0.05)
    memo.set("a", 1)
    assert memo.get("a") == 1
    time.sleep(0.06)
    assert memo.get("a") is None


def test_with_jitter_lives_are_spread_between_the_shortened_and_the_full_ttl():
    memo = LocalMemo(ttl=100.0, bound=1000, jitter=0.5)
    before = time.monotonic()
    for i in range(200):
        memo.set(i, i)
    lives = [memo._data[i][0] - before for i in range(200)]
    assert all(50 <= life <= 100.1 for life in lives)
    assert max(lives) - min(lives) > 30  # the entries set together do not expire together


def test_beyond_its_bound_the_oldest_tenth_goes_and_a_key_set_again_is_young():
    memo = LocalMemo(ttl=60.0, bound=20)
    for i in range(20):
        memo.set(i, i)
    memo.set(0, "again")  # set again: now the youngest
    memo.set(20, 20)  # over the bound: the two oldest go (1 and 2), not everything
    assert memo.get(1) is None and memo.get(2) is None
    assert memo.get(0) == "again" and all(memo.get(i) == i for i in range(3, 21))

"""Precomputed lists in the cache (`recommenders.store`): the bulk encoding and the bulk write give
exactly what one list written and read through the cache API gives."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.cache import cache

from personalization.hot_redis import redis_client
from recommenders import store


def test_a_block_of_lists_encodes_to_the_bytes_of_each_list():
    item_ids = np.array(["a", "bé", "c-3", "d d", "e"])
    ids = np.array([[2, 0, 4], [1, -1, -1], [-1, -1, -1], [3, -1, 0]])
    scores = np.array([[3.5, 2.0, 1.0], [0.25, -np.inf, -np.inf], [-np.inf] * 3, [9.0, -np.inf, 1.5]], dtype=np.float32)
    values = store.toplist_values(names=store.toplist_names(item_ids), ids=ids, scores=scores, computed_at=1234.5)
    expected = [
        store._encode(["c-3", "a", "e"], np.array([3.5, 2.0, 1.0]), 1234.5),
        store._encode(["bé"], np.array([0.25]), 1234.5),
        store._encode([], np.array([]), 1234.5),
        store._encode(["d d", "a"], np.array([9.0, 1.5]), 1234.5),
    ]
    assert values == expected
    assert store._decode(values[3]) == store.TopList(("d d", "a"), (9.0, 1.5), 1234.5)


@pytest.mark.django_db
def test_bulk_written_lists_read_back_through_the_cache(settings):
    assert redis_client() is not None, "the test settings use Redis: the raw write path is the one tested"
    cache.clear()
    values = [store._encode([f"item-{i}", "x"], np.array([2.0, 1.0]), 99.0) for i in range(5)]
    written = store.toplists_put(config_key="cfg", version=3, profile_ids=[10, 11, 12, 13, 14], values=values)
    assert written == 5
    got = store.toplists_get(config_key="cfg", version=3, profile_ids=[10, 12, 14, 15])
    assert set(got) == {10, 12, 14}
    assert got[12] == store.TopList(("item-2", "x"), (2.0, 1.0), 99.0)
    assert store.toplist_get(config_key="cfg", version=4, profile_id=10) is None
    # The same client keeps working after the raw writes (no reply left unread on its connection).
    cache.set("after", 1)
    assert cache.get("after") == 1

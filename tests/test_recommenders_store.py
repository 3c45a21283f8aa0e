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
    decoded = store._decode(values[3])
    assert (decoded.item_ids, decoded.scores, decoded.computed_at) == (("d d", "a"), (9.0, 1.5), 1234.5)
    assert decoded.reasons() == [("", ""), ("", "")]


def test_a_block_of_lists_carries_each_items_reason():
    item_ids = np.array(["a", "bé", "c-3", "d d", "e"])
    ids = np.array([[2, 0, 4], [1, -1, -1], [-1, 3, 0]])
    scores = np.array([[3.5, 2.0, 1.0], [0.25, -np.inf, -np.inf], [-np.inf, 9.0, 1.5]], dtype=np.float32)
    anchors = np.array([[3, 1], [-1, -1], [4, -1]])  # row 0: "d d" then "bé"; row 2: "e"
    slots = np.array([[1, store.NO_REASON, 0], [store.NO_REASON] * 3, [7, 0, store.NO_REASON]], dtype=np.uint8)
    values = store.toplist_values(
        names=store.toplist_names(item_ids), ids=ids, scores=scores, computed_at=5.0, anchors=anchors, slots=slots
    )
    lists = [store._decode(v) for v in values]
    assert [t.item_ids for t in lists] == [("c-3", "a", "e"), ("bé",), ("d d", "a")]
    assert lists[0].reasons() == [("bé", "viewed"), ("", ""), ("d d", "viewed")]
    assert lists[1].reasons() == [("", "")]
    assert lists[2].reasons() == [("e", "viewed"), ("", "")]  # the padding's slot went with the padding
    assert lists[0].anchors == ("d d", "bé") and lists[2].anchors == ("e",)


def test_a_list_keeps_its_reasons_and_verbs_and_one_stored_without_them_still_reads():
    because = [("x", "bought"), ("", ""), ("y", "viewed"), ("x", "bought"), ("z", "added to your cart")]
    value = store._encode(["a", "b", "c", "d", "e"], np.array([5.0, 4.0, 3.0, 2.0, 1.0]), 7.0, because)
    toplist = store._decode(value)
    assert toplist.item_ids == ("a", "b", "c", "d", "e") and toplist.scores == (5.0, 4.0, 3.0, 2.0, 1.0)
    assert toplist.reasons() == because and toplist.anchors == ("x", "y", "z")
    assert store._decode(store._encode(["a"], np.array([1.0]), 7.0)).reasons() == [("", "")]
    # The layout before reasons (TL1): time, count, scores, ids.
    old = store.MAGIC_V1 + store._HEAD_V1.pack(7.0, 2) + np.array([2.0, 1.0], dtype="<f4").tobytes() + b"a\x1fb"
    legacy = store._decode(old)
    assert (legacy.item_ids, legacy.scores, legacy.slots, legacy.reasons()) == (("a", "b"), (2.0, 1.0), None, None)
    assert legacy.because(1) == ("", "")


@pytest.mark.django_db
def test_bulk_written_lists_read_back_through_the_cache(settings):
    assert redis_client() is not None, "the test settings use Redis: the raw write path is the one tested"
    cache.clear()
    values = [store._encode([f"item-{i}", "x"], np.array([2.0, 1.0]), 99.0) for i in range(5)]
    written = store.toplists_put(config_key="cfg", version=3, profile_ids=[10, 11, 12, 13, 14], values=values)
    assert written == 5
    got = store.toplists_get(config_key="cfg", version=3, profile_ids=[10, 12, 14, 15])
    assert set(got) == {10, 12, 14}
    assert (got[12].item_ids, got[12].scores, got[12].computed_at) == (("item-2", "x"), (2.0, 1.0), 99.0)
    assert store.toplist_get(config_key="cfg", version=4, profile_id=10) is None
    # The same client keeps working after the raw writes (no reply left unread on its connection).
    cache.set("after", 1)
    assert cache.get("after") == 1

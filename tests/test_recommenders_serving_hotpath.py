"""The cached answer's cost, pinned: no database query once the visitor is known to the visitor cache,
and the cache never serves a visitor as they were before a change (consent, a merge, erasure)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from django.core.cache import cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommenders import cache_keys
from recommenders.serving.visitors import VISITOR_SKEW, near_prefixes, visitor_by_anonymous_id, visitor_stamp_key
from tests.recommenders_helpers import near_seq, near_told, personalization_withdraw
from tests.test_recommenders_serving import (  # noqa: F401
    _fresh,
    catalogue,
    event,
    group_of,
    ids,
    journeys,
    recommend,
    send,
    train,
)
from tracking.selectors import profile_by_anonymous_id


@pytest.fixture
def shop(client_public):
    """The serving tests' shop: a catalogue, visitors' journeys and a trained EASE model, live."""
    catalogue()
    send(client_public, *journeys())
    return train()


def _warm(client) -> None:
    """What a web process has after a few pages: the key, purposes, placement and catalogue memos,
    the near cache's connection. And time: a profile changed less than VISITOR_SKEW ago is read
    from the database (clock skew)."""
    time.sleep(VISITOR_SKEW)
    recommend(client, anonymous_id="v3", n=3)
    recommend(client, anonymous_id="v3", n=3)
    client.get("/api/v1/trending", {"n": 24})


@pytest.mark.django_db
def test_a_returning_visitors_cached_list_costs_no_database_query(client_public, shop, django_assert_num_queries):
    _warm(client_public)
    with django_assert_num_queries(1):  # their first list: the visitor is looked up once
        first = recommend(client_public, anonymous_id="v4", n=3)
    with django_assert_num_queries(0):
        again = recommend(client_public, anonymous_id="v4", n=3)
    assert first["strategy"] == again["strategy"] == "cached"
    assert ids(again) == ids(first) and again["token"] != first["token"]


@pytest.mark.django_db
def test_a_cached_list_by_user_id_costs_no_database_query_either(
    client_public, client_secret, shop, django_assert_num_queries
):
    send(client_public, {**event("v1", "bag-0", kind="identify"), "user_id": "u-1"})
    _warm(client_public)
    recommend(client_secret, user_id="u-1", n=3)
    with django_assert_num_queries(0):
        body = recommend(client_secret, user_id="u-1", n=3)
    assert body["personalized"] and {group_of(i) for i in ids(body)} == {"bags"}


@pytest.mark.django_db
def test_withdrawing_consent_takes_effect_on_the_next_list_despite_the_visitor_cache(client_public, shop):
    assert recommend(client_public, anonymous_id="v0", n=3)["personalized"] is True
    assert visitor_by_anonymous_id("v0", cached=True).read_at is not None  # cached now
    personalization_withdraw("v0")
    body = recommend(client_public, anonymous_id="v0", n=3)
    assert body["personalized"] is False and {item["algorithm"] for item in body["items"]} == {"trending"}


@pytest.mark.django_db
def test_a_visitor_merged_into_a_known_user_gets_the_users_list_at_once(client_public, client_secret, shop):
    # v2 (home) signs in as the user v1 (bags) is: v2's profile merges into v1's.
    send(client_public, {**event("v1", "bag-0", kind="identify"), "user_id": "u-1"})
    assert {group_of(i) for i in ids(recommend(client_public, anonymous_id="v2", n=3))} == {"home"}
    send(client_public, {**event("v2", "bag-1", kind="identify"), "user_id": "u-1"})
    assert profile_by_anonymous_id("v2") == profile_by_anonymous_id("v1")
    body = recommend(client_public, anonymous_id="v2", n=3)
    assert body["personalized"] and {group_of(i) for i in ids(body)} == {"bags"}


@pytest.mark.django_db
def test_an_erased_visitor_is_a_stranger_to_the_next_request(client_public, shop):
    from privacy.services.subjects import subject_erase

    assert recommend(client_public, anonymous_id="v5", n=3)["personalized"] is True
    subject_erase(profile=profile_by_anonymous_id("v5"))
    body = recommend(client_public, anonymous_id="v5", n=3)
    assert body["personalized"] is False and body["model_version"] is None
    assert {item["algorithm"] for item in body["items"]} <= {"trending", "collection", "popularity"}


_visits = st.lists(
    st.tuples(
        st.sampled_from(["product_view", "add_to_cart", "purchase", "page_view"]),
        st.sampled_from(["shoe-1", "shoe-2", "bag-3", ""]),
        st.integers(min_value=0, max_value=5),  # minutes ago: equal timestamps happen
    ),
    max_size=12,
)


@pytest.mark.django_db
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    visits=_visits,
    thumbs=st.dictionaries(st.sampled_from(["shoe-1", "bag-3", "home-0"]), st.sampled_from(["up", "down"])),
)
def test_the_one_statement_history_read_agrees_with_the_orm_read(client_public, visits, thumbs):
    """Recompute-on-read reads a visitor's history in one raw statement; the embedded mode uses the ORM."""
    from recommenders.services.catalogue import items_upsert
    from recommenders.serving.feedback import feedback_record
    from recommenders.serving.visitors import _history_rows, _history_rows_orm

    items_upsert(items=[{"external_id": i, "title": i} for i in ("shoe-1", "shoe-2", "bag-3", "home-0")])
    visitor = f"h-{next(_ids)}"
    events = [
        {**event(visitor, item, kind=kind, minutes_ago=ago), **({} if item else {"properties": {"url": "/x"}})}
        for kind, item, ago in visits
    ] or [event(visitor, "shoe-1")]
    send(client_public, *events)
    profile = profile_by_anonymous_id(visitor)
    for item, kind in thumbs.items():
        feedback_record(source=profile.last_source, profile=profile, external_id=item, kind=kind)
    for limit in (3, 100):
        raw_events, raw_feedback = _history_rows(profile.pk, limit)
        orm_events, orm_feedback = _history_rows_orm(profile.pk, limit)
        assert raw_events == orm_events
        assert sorted(raw_feedback) == sorted(orm_feedback)


_ids = iter(range(10**9))


@pytest.mark.django_db
def test_recompute_on_read_scores_the_same_whether_no_preferences_is_said_with_none_or_an_empty_set(client_public):
    """Recompute-on-read passes `preferences=None` for a visitor who stated nothing (content then skips
    building a zero vector); the hybrid must score exactly as with an empty Preferences."""
    import numpy as np
    from scipy import sparse

    from recommenders.algorithms.base import Preferences, UserContext
    from recommenders.registry import live_model

    catalogue()
    send(client_public, *journeys())
    train(algorithm="hybrid")
    loaded = live_model("default")
    for cols in ([0, 3], [5], [1, 2, 7, 9]):
        row = sparse.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), ([0] * len(cols), cols)), shape=(1, len(loaded.item_ids))
        )
        said_empty = loaded.recommender.recommend_fresh(
            row, N=10, context=UserContext(preferences=[Preferences()], recent_items=[cols[:1]])
        )
        said_none = loaded.recommender.recommend_fresh(row, N=10, context=UserContext(recent_items=[cols[:1]]))
        assert said_empty[0].tolist() == said_none[0].tolist()
        np.testing.assert_allclose(said_empty[1], said_none[1], rtol=1e-6)


@pytest.mark.django_db
def test_with_redis_down_a_visitor_remembered_by_the_process_is_read_again_from_the_database(client_public, shop):
    """The process's visitor memo is only trusted with the change stamp read from Redis: with Redis
    down, a consent withdrawn meanwhile (its stamp could not even be written) still applies."""
    from django.test import override_settings

    from recommenders.registry import registry_forget
    from tracking import selectors

    assert recommend(client_public, anonymous_id="v0", n=3)["personalized"] is True  # now in the memo
    down = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    registry_forget()
    with override_settings(CACHES=down):
        selectors._local_sources.clear()
        personalization_withdraw("v0")
        body = recommend(client_public, anonymous_id="v0", n=3)
    assert body["personalized"] is False


@pytest.mark.django_db
def test_after_warming_a_visitor_new_to_the_process_costs_no_database_query(
    client_public, shop, django_assert_num_queries
):
    from recommenders.serving.visitors import visitors_forget, visitors_warm

    _warm(client_public)
    time.sleep(VISITOR_SKEW)  # what the journeys changed is older than the warm read
    assert visitors_warm(active_days=30) >= 12  # every journey's anonymous identity
    visitors_forget()  # a process that has never seen v5 (the entry comes from Redis)
    with django_assert_num_queries(0):
        body = recommend(client_public, anonymous_id="v5", n=3)
    assert body["strategy"] == "cached" and body["personalized"]
    assert visitors_warm(active_days=30, limit=2) <= 4  # newest profiles first, bounded


@pytest.mark.django_db
def test_a_warmed_entry_is_condemned_by_a_later_change(client_public, shop):
    from recommenders.serving.visitors import visitors_forget, visitors_warm

    _warm(client_public)
    time.sleep(VISITOR_SKEW)
    visitors_warm(active_days=30)
    personalization_withdraw("v6")
    visitors_forget()
    assert recommend(client_public, anonymous_id="v6", n=3)["personalized"] is False


@pytest.mark.django_db
def test_erasure_deletes_the_visitors_cache_entries(client_public, shop):
    from django.core.cache import cache

    from privacy.services.subjects import subject_erase
    from recommenders.serving.visitors import visitor_index_key, visitor_key, visitors_warm

    recommend(client_public, anonymous_id="v7", n=3)  # remembered by the request
    visitors_warm(active_days=30)
    profile = profile_by_anonymous_id("v7")
    redis = cache.client.get_client()
    assert redis.exists(cache.make_key(visitor_key("anonymous", "v7")))
    subject_erase(profile=profile)
    assert not redis.exists(cache.make_key(visitor_key("anonymous", "v7")))
    assert not redis.exists(cache.make_key(visitor_index_key(profile.pk)))


@pytest.mark.django_db
def test_a_visitor_new_to_the_process_and_their_list_come_in_one_round_trip(client_public, shop, settings, monkeypatch):
    import redis

    from recommenders.serving.visitors import visitors_forget, visitors_warm

    settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 3600  # the served-list row waits in the process
    _warm(client_public)
    time.sleep(VISITOR_SKEW)
    visitors_warm(active_days=30)
    visitors_forget()
    trips = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, *args, **options):
        # One write to the socket is one round trip: a command, or a pipeline's commands together.
        packed = b"".join(command) if isinstance(command, list) else command
        names = re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", packed)
        trips.append(names[0].decode().upper() if len(names) == 1 else "pipeline")
        return send(self, command, *args, **options)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    body = recommend(client_public, anonymous_id="v8", n=3)
    first, trips[:] = list(trips), []
    again = recommend(client_public, anonymous_id="v8", n=3)
    second, trips[:] = list(trips), []
    third = recommend(client_public, anonymous_id="v8", n=3)
    monkeypatch.undo()
    assert body["strategy"] == again["strategy"] == third["strategy"] == "cached" and body["personalized"]
    assert first == ["EVALSHA"]  # the visitor, their list and their change stamp, in one script call
    assert second == trips == []  # all remembered by the process: unchanged, as far as Redis has told it
    assert ids(third) == ids(again) == ids(body)
    # A change to their stamp (an event of theirs, from another process as far as Redis knows): the
    # next answer reads the list and stamp again.
    stamp_key = cache.make_key(visitor_stamp_key(profile_by_anonymous_id("v8").pk))
    since = near_seq(near_prefixes())
    cache.client.get_client(write=True).set(stamp_key, cache.client.encode(time.time()))
    near_told(near_prefixes(), since)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    recommend(client_public, anonymous_id="v8", n=3)
    monkeypatch.undo()
    assert trips[0] == "MGET"


@pytest.mark.django_db
def test_a_version_going_live_queues_the_warming_of_the_visitor_cache(
    client_public, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.cache import cache

    from recommenders import tasks
    from recommenders.serving.visitors import visitor_key

    warmed = []
    monkeypatch.setattr(tasks.visitors_warm_task, "delay", lambda days: warmed.append(tasks.visitors_warm_task(days)))
    catalogue()
    send(client_public, *journeys())
    assert not cache.client.get_client().exists(cache.make_key(visitor_key("anonymous", "v1")))
    with django_capture_on_commit_callbacks(execute=True):
        train()
    assert len(warmed) == 1 and warmed[0] >= 12  # run by the worker after the commit
    assert cache.client.get_client().exists(cache.make_key(visitor_key("anonymous", "v1")))


@pytest.mark.django_db
def test_a_published_list_carries_its_reasons_and_they_match_explaining_it_on_the_request(
    client_public, shop, monkeypatch
):
    from recommenders import store
    from recommenders.registry import live_model
    from recommenders.serving import personal

    _warm(client_public)
    calls = []
    explain = personal.explain
    monkeypatch.setattr(personal, "explain", lambda *a, **k: (calls.append(len(a[1])), explain(*a, **k))[1])
    published = recommend(client_public, anonymous_id="v4", n=5)
    assert published["strategy"] == "cached" and calls == []  # the reasons came with the list
    # The same list stored the way lists were before they carried reasons: explained on the request.
    loaded, pid = live_model("default"), profile_by_anonymous_id("v4").pk
    toplist = store.toplist_get(config_key=loaded.config_key, version=loaded.version, profile_id=pid)
    assert toplist.slots is not None and len(toplist.anchors) <= personal.ANCHORS
    old = store.MAGIC_V1 + store._HEAD_V1.pack(toplist.computed_at, len(toplist.item_ids))
    old += np.asarray(toplist.scores, dtype="<f4").tobytes() + store.SEPARATOR.join(toplist.item_ids).encode()
    cache.set(cache_keys.toplist(loaded.config_key, loaded.version, pid), old, 3600)
    explained = recommend(client_public, anonymous_id="v4", n=5)
    assert explained["strategy"] == "cached" and calls == [5]
    reasons = [(i["id"], i["reason"]) for i in explained["items"]]
    assert [(i["id"], i["reason"]) for i in published["items"]] == reasons
    assert any(reason.startswith("because you viewed") for _, reason in reasons)


@pytest.mark.django_db
def test_a_list_recomputed_on_read_is_cached_with_the_reasons_from_the_visitors_latest_items(client_public, shop):
    from recommenders import store
    from recommenders.registry import live_model

    _warm(client_public)
    send(client_public, event("v1", "bag-0", kind="add_to_cart"))  # v1 looks at bags
    recomputed = recommend(client_public, anonymous_id="v1", n=5)
    assert recomputed["strategy"] == "recomputed"
    loaded, pid = live_model("default"), profile_by_anonymous_id("v1").pk
    toplist = store.toplist_get(config_key=loaded.config_key, version=loaded.version, profile_id=pid)
    by_item = dict(zip(toplist.item_ids, toplist.reasons(), strict=True))
    assert ("bag-0", "added to your cart") in by_item.values(), by_item
    time.sleep(VISITOR_SKEW)
    cached = recommend(client_public, anonymous_id="v1", n=5)
    assert cached["strategy"] == "cached" and ids(cached) == ids(recomputed)
    assert [i["reason"] for i in cached["items"]] == [i["reason"] for i in recomputed["items"]]


@pytest.mark.django_db
def test_what_a_process_keeps_of_its_visitors_and_lists_is_never_walked_by_the_garbage_collector(
    client_public, shop, settings
):
    """Thousands of visitors kept as instances made every full collection walk them: pauses of the
    whole process of tens of milliseconds, every second or two under load. Kept as plain tuples, the
    cyclic collector untracks them (and the served-list rows waiting for their push are strings)."""
    import gc

    from personalization import hot_redis
    from recommenders.serving import served, visitors

    settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 3600  # the rows wait in the process
    _warm(client_public)
    for visitor in ("v3", "v4", "v5", "v3"):
        assert recommend(client_public, anonymous_id=visitor, n=3)["strategy"] == "cached"
    # A tuple is untracked once what it holds is: an outer one met before its inner ones (the
    # generations are merged youngest first) is left to the next collection, one per level at most.
    for _ in range(4):
        gc.collect()
    memo = [kept for pair in visitors._local._data.items() for kept in pair]
    near = [value for state in hot_redis._near_state.values() for value in state.values.values()]
    assert len(memo) >= 6 and len(near) >= 2  # each visitor's entry; a returning one's list and change stamp
    assert not [entry for entry in memo + near if gc.is_tracked(entry)]
    assert served._local._rows and all(isinstance(row, str) for row in served._local._rows)


@pytest.mark.django_db
def test_a_profile_built_from_a_kept_entry_is_the_one_the_database_read_gives(client_public, shop):
    from recommenders.serving import visitors
    from tracking.models import Profile

    profile = profile_by_anonymous_id("v4")
    Profile.objects.filter(pk=profile.pk).update(traits={"plan": "gold", "sizes": [40, 41]})
    read = visitors.visitor_by_anonymous_id("v4")
    entry = visitors._kept(visitors._entry(read, time.time()))
    built = visitors._from_entry(entry, "anonymous", ("v4",)).profile
    expected = Profile.from_db(
        "default", list(visitors.PROFILE_FIELDS), [getattr(read.profile, f) for f in visitors.PROFILE_FIELDS]
    )
    assert {k: v for k, v in built.__dict__.items() if k != "_state"} == {
        k: v for k, v in expected.__dict__.items() if k != "_state"
    }
    assert built.traits == {"plan": "gold", "sizes": [40, 41]} and built.uuid == profile.uuid
    assert (built._state.adding, built._state.db) == (False, "default")
    assert built.get_deferred_fields() == expected.get_deferred_fields() != set()
    assert built.event_count == profile.event_count  # a deferred field loads from the database
    assert built.traits is not visitors._from_entry(entry, "anonymous", ("v4",)).profile.traits  # not shared

"""The cached answer's cost, pinned: no database query once the visitor is known to the visitor cache,
and the cache never serves a visitor as they were before a change (consent, a merge, erasure)."""

from __future__ import annotations

import time

import pytest

from recommenders.serving.visitors import VISITOR_SKEW, visitor_by_anonymous_id
from tests.test_recommenders_serving import _fresh, catalogue, event, group_of, ids, journeys, recommend, send, train  # noqa: F401
from tracking.selectors import profile_by_anonymous_id


@pytest.fixture
def shop(client_public):
    """The serving tests' shop: a catalogue, visitors' journeys and a trained EASE model, live."""
    catalogue()
    send(client_public, *journeys())
    return train()


def _warm(client) -> None:
    """What a web process has after a few pages: the key, purposes, placement and catalogue memos.
    And time: a profile changed less than VISITOR_SKEW ago is read from the database (clock skew)."""
    time.sleep(VISITOR_SKEW)
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
    from privacy.services.consent import consent_record

    assert recommend(client_public, anonymous_id="v0", n=3)["personalized"] is True
    assert visitor_by_anonymous_id("v0", cached=True).read_at is not None  # cached now
    profile = profile_by_anonymous_id("v0")
    consent_record(
        profile_id=profile.pk,
        decisions={"personalization": False},
        origin="banner",
        source=profile.last_source,
        policy_version=1,
    )
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

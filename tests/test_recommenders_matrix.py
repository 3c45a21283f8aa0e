"""Interaction matrix: event weights per type, time decay, consent filtering per source regime,
explicit feedback as a negative signal, and per-profile rows following merges and erasure."""

from __future__ import annotations

import math

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.services.consent import consent_decide
from recommenders.models import Feedback, Item, RecommendationServed
from recommenders.services.matrix import interactions_build
from tests.factories import SourceFactory
from tests.recommenders_helpers import config, send, view
from tracking.models import Source
from tracking.selectors import profile_by_anonymous_id


def cells(interactions) -> dict[tuple[str, str], float]:
    """{(anonymous id of the profile, item): weight} for readable assertions."""
    from tracking.models import Identity

    anon = dict(Identity.objects.filter(kind="anonymous").values_list("profile_id", "value"))
    return {
        (anon[int(interactions.profile_ids[r])], str(interactions.item_ids[c])): float(w)
        for r, c, w in zip(interactions.rows, interactions.cols, interactions.weights, strict=True)
    }


@pytest.mark.django_db
def test_weights_per_event_type_are_summed_per_profile_and_item(client_public):
    send(
        client_public,
        view("a", "x", n=1, days_ago=0),
        view("a", "x", n=2, days_ago=0, kind="add_to_cart"),
        view("a", "y", n=3, days_ago=0, kind="purchase"),
        view("a", "z", n=4, days_ago=0, kind="page_view"),  # no weight configured: ignored
    )
    cfg = config(half_life_days=None, event_weights={"product_view": 1, "add_to_cart": 4, "purchase": 8})
    result = interactions_build(config=cfg)
    assert cells(result) == {("a", "x"): 5.0, ("a", "y"): 8.0}
    assert result.event_types == {"product_view": 1, "add_to_cart": 1, "purchase": 1}
    assert result.stats()["nnz"] == 2


@pytest.mark.django_db
def test_old_interactions_weigh_less_with_the_half_life(client_public):
    send(client_public, view("a", "new", n=1, days_ago=0), view("a", "old", n=2, days_ago=10))
    result = cells(interactions_build(config=config(half_life_days=10, event_weights={"product_view": 2})))
    assert result[("a", "new")] == pytest.approx(2.0, rel=1e-3)
    assert result[("a", "old")] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.django_db
def test_visitors_who_refused_personalization_are_left_out(client_public, source):
    send(client_public, view("keeps", "x", n=1), view("refuses", "x", n=2))
    consent_decide(source=source, anonymous_id="refuses", decisions={"personalization": False}, origin="banner")
    result = cells(interactions_build(config=config()))
    assert set(result) == {("keeps", "x")}


@pytest.mark.django_db
def test_opt_in_sources_count_only_visitors_who_granted_personalization(client):
    strict = SourceFactory(consent_regime=Source.ConsentRegime.OPT_IN)
    for anonymous_id in ("granted", "silent"):
        consent_decide(source=strict, anonymous_id=anonymous_id, decisions={"analytics": True}, origin="banner")
    consent_decide(source=strict, anonymous_id="granted", decisions={"personalization": True}, origin="banner")
    events = [view("granted", "x", n=1), view("silent", "x", n=2)]
    response = client.post(
        "/api/v1/events", {"events": events}, content_type="application/json", HTTP_X_WRITE_KEY=strict.write_key
    )
    assert response.json()["accepted"] == 2
    assert set(cells(interactions_build(config=config()))) == {("granted", "x")}


@pytest.mark.django_db
def test_thumbs_down_is_a_negative_signal(client_public):
    send(client_public, view("a", "x", n=1, days_ago=0), view("a", "y", n=2, days_ago=0))
    profile = profile_by_anonymous_id("a")
    Feedback.objects.create(profile=profile, item=Item.objects.get(external_id="y"), kind="down")
    Feedback.objects.create(profile=profile, item=Item.objects.get(external_id="x"), kind="up")  # not weighted
    cfg = config(half_life_days=None, event_weights={"product_view": 1, "thumbs_down": -4})
    assert cells(interactions_build(config=cfg)) == {("a", "x"): 1.0, ("a", "y"): -3.0}


@pytest.mark.django_db
def test_feedback_and_served_lists_follow_a_profile_merge(client_public):
    send(client_public, view("anon", "x", n=1), view("anon", "y", n=2), view("known", "x", n=3))
    anon, known = profile_by_anonymous_id("anon"), profile_by_anonymous_id("known")
    x, y = Item.objects.get(external_id="x"), Item.objects.get(external_id="y")
    Feedback.objects.create(profile=known, item=x, kind="up")
    Feedback.objects.create(profile=anon, item=x, kind="down")  # later: wins
    Feedback.objects.create(profile=anon, item=y, kind="up")
    RecommendationServed.objects.create(profile=anon, placement="home", items=["x"])
    from tracking.services.identity import profile_merge

    profile_merge(source_id=anon.pk, target_id=known.pk)
    assert dict(Feedback.objects.filter(profile=known).values_list("item__external_id", "kind")) == {
        "x": "down",
        "y": "up",
    }
    assert RecommendationServed.objects.get().profile_id == known.pk


@pytest.mark.django_db
def test_erasure_reaches_feedback_and_served_lists(client_public, source):
    from privacy import registry

    labels = {h.label for h in registry.holdings()}
    assert {"recommendation_feedback", "recommendations_served"} <= labels
    send(client_public, view("gone", "x", n=1))
    profile = profile_by_anonymous_id("gone")
    Feedback.objects.create(profile=profile, item=Item.objects.get(external_id="x"), kind="down")
    RecommendationServed.objects.create(profile=profile, items=["x"], served_at=timezone.now())
    profile.delete()
    assert not Feedback.objects.exists() and not RecommendationServed.objects.exists()


@given(
    history=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["i1", "i2", "i3", "i4"]),
            st.sampled_from(["product_view", "add_to_cart", "purchase"]),
            st.floats(0, 60),
        ),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.django_db
def test_sql_matrix_agrees_with_the_definition(client_public, history):
    """The one-statement aggregation and a plain Python reading of the same events agree."""
    from recommenders.models import RecommenderConfig
    from tracking.models import Event

    Event.objects.all().delete()
    RecommenderConfig.objects.all().delete()
    weights = {"product_view": 1, "add_to_cart": 4, "purchase": 8}
    events = [view(who, item, n=n, days_ago=age, kind=kind) for n, (who, item, kind, age) in enumerate(history)]
    send(client_public, *events)
    now = timezone.now()
    expected: dict[tuple[str, str], float] = {}
    for who, item, kind, age in history:
        expected[(who, item)] = expected.get((who, item), 0.0) + weights[kind] * 0.5 ** (age / 30)
    got = cells(interactions_build(config=config(event_weights=weights, half_life_days=30), now=now))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-3), key

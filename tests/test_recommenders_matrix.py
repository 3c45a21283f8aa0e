"""Interaction matrix: event weights per type, time decay, consent filtering per source regime,
explicit feedback as a negative signal, and per-profile rows following merges and erasure."""

from __future__ import annotations

import math

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
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


def reference_cells(cfg, now) -> dict[tuple[int, str], tuple[float, float]]:
    """The matrix by definition, read from the stored rows one by one in Python: per (profile, item)
    cell the sum of type weight x 0.5^(age / half-life) over the events naming the item (as
    `item_id` or in `products[]`) plus the undecayed feedback weights, and the latest time, for the
    visitors who did not refuse personalization; cells summing to zero are no cells."""
    from privacy.models import ConsentState
    from tracking.models import Event

    refused = set(
        ConsentState.objects.filter(purpose__key="personalization", granted=False).values_list("profile_id", flat=True)
    )
    weights = cfg.event_weights
    sums: dict[tuple[int, str], float] = {}
    latest: dict[tuple[int, str], float] = {}

    def add(key, weight, at):
        sums[key] = sums.get(key, 0.0) + weight
        latest[key] = max(latest.get(key, at), at)

    for event in Event.objects.filter(type__in=[t for t in weights if not t.startswith("thumbs")]):
        if event.profile_id in refused:
            continue
        named = [event.properties["item_id"], *event.properties.get("products", [])]
        age_days = (now - event.timestamp).total_seconds() / 86400
        decay = 0.5 ** (age_days / cfg.half_life_days) if cfg.half_life_days else 1.0
        for item in named:
            add((event.profile_id, item), weights[event.type] * decay, event.timestamp.timestamp())
    for feedback in Feedback.objects.select_related("item"):
        weight = weights.get({"down": "thumbs_down", "up": "thumbs_up"}[feedback.kind])
        if weight and feedback.profile_id not in refused:
            add((feedback.profile_id, feedback.item.external_id), weight, feedback.created_at.timestamp())
    return {key: (total, latest[key]) for key, total in sums.items() if total != 0}


@given(
    history=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["i1", "i2", "i3", "i4"]),
            st.sampled_from(["product_view", "add_to_cart", "purchase"]),
            st.sampled_from([0.0, 0.5, 3.0, 45.0]),
            st.lists(st.sampled_from(["i1", "i2", "i5"]), max_size=2),
        ),
        min_size=1,
        max_size=20,
    ),
    feedback=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["i1", "i2", "i5"]), st.booleans()),
        max_size=6,
        unique_by=lambda f: f[:2],
    ),
    refusing=st.sets(st.sampled_from(["a", "b", "c", "d"]), max_size=2),
    half_life=st.sampled_from([None, 30]),
)
@example(  # a thumbs down cancelling a view (its cell, and c's only row, go), a refusal, a products[] list
    history=[
        ("a", "i1", "product_view", 0.5, []),
        ("a", "i2", "purchase", 3.0, ["i5", "i1"]),
        ("b", "i1", "add_to_cart", 0.0, []),
        ("c", "i3", "product_view", 45.0, []),
    ],
    feedback=[("a", "i5", False), ("c", "i3", False), ("a", "i2", True)],
    refusing={"b"},
    half_life=None,
)
@example(  # every cell cancelled: an empty matrix
    history=[("a", "i1", "product_view", 0.0, [])], feedback=[("a", "i1", False)], refusing=set(), half_life=None
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.django_db
def test_the_extract_gives_the_matrix_of_the_definition(client_public, source, history, feedback, refusing, half_life):
    """Decay, type weights, list-shaped events, negative feedback cancelling a view, consent: the
    extract (SQL rows aggregated in numpy) and the definition read row by row give the same cells,
    weights and times, and rows and columns only for profiles and items that keep a cell."""
    from recommenders.models import RecommenderConfig
    from tracking.models import Event, Profile

    Feedback.objects.all().delete()
    Event.objects.all().delete()
    Profile.objects.all().delete()
    RecommenderConfig.objects.all().delete()
    events = [
        view(who, item, n=n, days_ago=age, kind=kind, products=list(products))
        for n, (who, item, kind, age, products) in enumerate(history)
    ]
    send(client_public, *events)
    profiles = {who: profile_by_anonymous_id(who) for who, *_ in history}
    for who in refusing & set(profiles):
        consent_decide(source=source, anonymous_id=who, decisions={"personalization": False}, origin="banner")
    for who, item, up in feedback:
        if who in profiles:
            Item.objects.get_or_create(external_id=item)
            Feedback.objects.create(
                profile=profiles[who], item=Item.objects.get(external_id=item), kind="up" if up else "down"
            )
    weights = {"product_view": 1, "add_to_cart": 4, "purchase": 8, "thumbs_down": -1, "thumbs_up": 2}
    cfg = config(event_weights=weights, half_life_days=half_life)
    now = timezone.now()
    result = interactions_build(config=cfg, now=now)
    expected = reference_cells(cfg, now)

    got = {
        (int(result.profile_ids[r]), str(result.item_ids[c])): (float(w), float(t))
        for r, c, w, t in zip(result.rows, result.cols, result.weights, result.timestamps, strict=True)
    }
    assert set(got) == set(expected)
    for key, (weight, at) in expected.items():
        assert got[key][0] == pytest.approx(weight, rel=1e-6), key
        assert got[key][1] == at, key
    assert sorted(result.profile_ids.tolist()) == sorted({profile for profile, _ in expected})
    assert sorted(result.item_ids.tolist()) == sorted({item for _, item in expected})
    assert len(set(zip(result.rows.tolist(), result.cols.tolist(), strict=True))) == len(result.rows)

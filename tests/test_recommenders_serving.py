"""Serving API end to end on Postgres + Redis: a model trained by the real pipeline from events sent
through the ingestion API, then lists asked for the way a storefront and a backend ask for them."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommenders.models import Collection, CollectionItem, Feedback, Placement, RecommendationServed, RecommenderConfig
from recommenders.registry import registry_forget
from recommenders.services.catalogue import items_upsert
from recommenders.services.training import model_train
from recommenders.serving.items import items_forget
from recommenders.serving.placements import placements_forget
from recommenders.serving.served import served_flush
from recommenders.serving.trending import trending_forget
from recommenders.serving.visitors import visitors_forget
from tests.recommenders_helpers import personalization_withdraw
from tracking import selectors
from tracking.selectors import profile_by_anonymous_id

GROUPS = {
    "shoes": [f"shoe-{i}" for i in range(8)],
    "bags": [f"bag-{i}" for i in range(8)],
    "home": [f"home-{i}" for i in range(8)],
}
ALL_ITEMS = sorted(item for items in GROUPS.values() for item in items)
TITLES = {"shoes": "Trail runner", "bags": "Daypack", "home": "Camp mug"}
MOBILE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)


def group_of(item: str) -> str:
    return next(group for group, items in GROUPS.items() if item in items)


def catalogue() -> None:
    items_upsert(
        items=[
            {
                "external_id": item,
                "title": f"{TITLES[group]} {i}",
                "categories": [group],
                "tags": ["outdoor"],
                "price": 10 + i,
            }
            for group, items in GROUPS.items()
            for i, item in enumerate(items)
        ]
    )


def send(client, *events) -> None:
    for start in range(0, len(events), 500):
        response = client.post("/api/v1/events", {"events": list(events[start : start + 500])}, format="json")
        assert response.status_code == 200, response.json()


_seq = iter(range(10**9))


def event(anonymous_id: str, item: str, *, kind: str = "product_view", minutes_ago: float = 60.0, **context) -> dict:
    return {
        "type": kind,
        "anonymous_id": anonymous_id,
        "message_id": f"{kind}-{anonymous_id}-{next(_seq)}",
        "timestamp": (timezone.now() - timedelta(minutes=minutes_ago)).isoformat(),
        "properties": {"item_id": item},
        **({"context": context} if context else {}),
    }


def journeys(visitors: int = 45, seed: int = 5) -> list[dict]:
    """Visitors who each stick to one category over a few days: a signal a model can learn."""
    rng = random.Random(seed)
    events = []
    for v in range(visitors):
        group = list(GROUPS)[v % len(GROUPS)]
        for n, item in enumerate(rng.sample(GROUPS[group], 5)):
            events.append(event(f"v{v}", item, minutes_ago=3 * 24 * 60 - n * 90))
    return events


def train(algorithm: str = "ease", **params):
    config = RecommenderConfig.objects.create(
        key="default", name="Default", algorithm=algorithm, params=params, is_default=True
    )
    result = model_train(config_id=config.pk)
    assert result.status == "live", result.reason
    registry_forget()
    return result


@pytest.fixture(autouse=True)
def _fresh(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    registry_forget()
    placements_forget()
    trending_forget()
    items_forget()
    visitors_forget()
    yield
    registry_forget()
    placements_forget()
    trending_forget()
    items_forget()
    visitors_forget()


@pytest.fixture
def shop(client_public):
    catalogue()
    send(client_public, *journeys())
    return train()


def recommend(client, **params):
    response = client.get("/api/v1/recommendations", params)
    assert response.status_code == 200, response.json()
    return response.json()


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


@pytest.mark.django_db
def test_visitor_gets_their_own_list_with_reasons_and_a_token_that_logs_it(client_public, shop):
    body = recommend(client_public, anonymous_id="v0", n=3, placement="home-page")
    assert body["personalized"] is True and body["strategy"] == "cached"
    assert len(body["items"]) == 3
    # v0 browses shoes (5 of the 8 seen): the model recommends the shoes they have not seen, and says why.
    assert {group_of(i) for i in ids(body)} == {"shoes"}
    seen = {e["properties"]["item_id"] for e in journeys() if e["anonymous_id"] == "v0"}
    assert not set(ids(body)) & seen
    first = body["items"][0]
    assert first["algorithm"] == "ease" and first["reason"].startswith("because you viewed Trail runner")
    assert first["title"].startswith("Trail runner") and first["categories"] == ["shoes"]
    served_flush()  # the served-list log is buffered in Redis and written in bulk
    served = RecommendationServed.objects.get(token=body["token"])
    assert served.placement == "home-page" and served.items == ids(body)
    assert served.model_version.version == body["model_version"] == shop.version
    assert served.profile == profile_by_anonymous_id("v0")


@pytest.mark.django_db
def test_write_key_cannot_ask_by_user_id_but_a_secret_key_can(client_public, client_secret, shop):
    response = client_public.get("/api/v1/recommendations", {"user_id": "u-1"})
    assert response.status_code == 403
    assert "secret key" in response.json()["message"]
    send(client_public, {**event("v1", "bag-0", kind="identify"), "user_id": "u-1"})
    body = recommend(client_secret, user_id="u-1", n=3)
    assert body["personalized"] and {group_of(i) for i in ids(body)} == {"bags"}


@pytest.mark.django_db
def test_exclude_is_honoured_together_with_the_category_filter(client_public, shop):
    first = recommend(client_public, anonymous_id="v0", n=5, category="bags")
    assert first["items"] and {group_of(i) for i in ids(first)} == {"bags"}
    dropped = ids(first)[:2]
    second = recommend(client_public, anonymous_id="v0", n=5, category="bags", exclude=",".join(dropped))
    assert not set(dropped) & set(ids(second))
    assert {group_of(i) for i in ids(second)} == {"bags"} and len(second["items"]) == 5


@pytest.mark.django_db
def test_thumbs_down_removes_the_item_from_the_next_list_at_once(client_public, shop):
    before = recommend(client_public, anonymous_id="v0", n=4)
    disliked = ids(before)[0]
    response = client_public.post(
        "/api/v1/feedback", {"anonymous_id": "v0", "item_id": disliked, "kind": "down"}, format="json"
    )
    assert response.status_code == 201, response.json()
    after = recommend(client_public, anonymous_id="v0", n=4)
    assert disliked not in ids(after) and len(after["items"]) == 4
    row = Feedback.objects.get(profile=profile_by_anonymous_id("v0"))
    assert (row.item.external_id, row.kind) == (disliked, "down")


@pytest.mark.django_db
def test_feedback_with_the_write_key_is_for_the_visitors_own_id_and_a_known_item(client_public, shop):
    other = client_public.post("/api/v1/feedback", {"user_id": "u-9", "item_id": "bag-1", "kind": "up"}, format="json")
    assert other.status_code == 403
    unknown = client_public.post(
        "/api/v1/feedback", {"anonymous_id": "v0", "item_id": "nope", "kind": "down"}, format="json"
    )
    assert unknown.status_code == 404 and "item_id" in unknown.json()["message"]
    bad = client_public.post(
        "/api/v1/feedback", {"anonymous_id": "v0", "item_id": "bag-1", "kind": "meh"}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "kind"


@pytest.mark.django_db
def test_withdrawn_personalization_consent_gives_the_non_personalized_trending_list(client_public, shop):
    personalization_withdraw("v0")
    body = recommend(client_public, anonymous_id="v0", n=5)
    assert body["personalized"] is False and body["model_version"] is None
    assert {item["algorithm"] for item in body["items"]} == {"trending"}
    assert {item["reason"] for item in body["items"]} == {"trending now"}
    # The same list anybody gets from the trending endpoint, nothing shaped by v0's own history.
    trending = client_public.get("/api/v1/trending", {"n": 5}).json()
    assert ids(body) == ids(trending)
    served_flush()
    assert RecommendationServed.objects.get(token=body["token"]).profile is None


@pytest.mark.django_db
def test_recommendations_still_answer_when_redis_is_down(client_public, client_secret, shop):
    down = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    registry_forget()
    with override_settings(CACHES=down):
        selectors._local_sources.clear()  # the key check itself must not need the cache
        body = recommend(client_public, anonymous_id="v0", n=3)
        similar = client_public.get("/api/v1/items/shoe-1/similar", {"n": 3})
        by_user = client_secret.get("/api/v1/recommendations", {"user_id": "nobody-yet", "n": 2})
    assert by_user.status_code == 200 and len(by_user.json()["items"]) == 2
    assert body["personalized"] and body["strategy"] == "recomputed"
    assert {group_of(i) for i in ids(body)} == {"shoes"} and body["model_version"] == shop.version
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    # With Redis down the served-list log cannot be buffered: it is written at once, nothing is lost.
    assert RecommendationServed.objects.filter(token=body["token"], profile=profile_by_anonymous_id("v0")).exists()


@pytest.mark.django_db
def test_a_visitor_with_newer_events_than_the_precompute_is_recomputed_on_read_and_recached(client_public, shop):
    assert recommend(client_public, anonymous_id="v0", n=6)["strategy"] == "cached"
    before = recommend(client_public, anonymous_id="v0", n=6)
    newly_seen = ids(before)[0]
    send(client_public, event("v0", newly_seen, kind="add_to_cart", minutes_ago=1))
    after = recommend(client_public, anonymous_id="v0", n=6)
    assert after["strategy"] == "recomputed"
    assert newly_seen not in ids(after)  # what they now interacted with is no longer recommended
    again = recommend(client_public, anonymous_id="v0", n=6)
    assert again["strategy"] == "cached" and ids(again) == ids(after)


@pytest.mark.django_db
def test_a_visitor_with_a_few_events_gets_item_to_item_from_their_session(client_public, shop):
    send(client_public, event("newcomer", "home-3", minutes_ago=2))
    body = recommend(client_public, anonymous_id="newcomer", n=3)
    assert body["strategy"] == "session" and body["personalized"]
    assert {group_of(i) for i in ids(body)} == {"home"} and "home-3" not in ids(body)
    assert body["items"][0]["reason"] == "because you viewed Camp mug 3"


@pytest.mark.django_db
def test_stated_preferences_give_content_based_picks(client_public, shop):
    traits = {"preferences": {"categories": ["bags"]}}
    send(client_public, {**event("onboarded", "", kind="identify"), "traits": traits})
    body = recommend(client_public, anonymous_id="onboarded", n=3)
    assert body["strategy"] == "preferences"
    assert {group_of(i) for i in ids(body)} == {"bags"}
    assert body["items"][0]["reason"] == "matches your interest in bags"


@pytest.mark.django_db
def test_a_first_visit_gets_the_placements_collection_then_what_trends_on_their_device(client_public, shop):
    collection = Collection.objects.create(key="picks", name="Staff picks")
    CollectionItem.objects.create(collection=collection, item_id=_item("home-7"), position=0)
    Placement.objects.create(key="landing", fallback_collection=collection, n=3)
    send(
        client_public,
        *[event(f"m{i}", "bag-5", minutes_ago=30, userAgent=MOBILE_UA) for i in range(3)],
    )
    trending_forget()
    body = client_public.get(
        "/api/v1/recommendations", {"anonymous_id": "brand-new", "placement": "landing"}, HTTP_USER_AGENT=MOBILE_UA
    ).json()
    assert body["strategy"] == "collection"
    assert ids(body)[:2] == ["home-7", "bag-5"]
    assert body["items"][0]["reason"] == "from our selection Staff picks"
    assert body["items"][1]["reason"] == "popular on mobile"


def _item(external_id: str) -> int:
    from recommenders.models import Item

    return Item.objects.get(external_id=external_id).pk


@pytest.mark.django_db
def test_similar_items_leave_out_the_item_itself_and_unknown_items_are_404(client_public, shop):
    response = client_public.get("/api/v1/items/shoe-2/similar", {"n": 4})
    assert response.status_code == 200
    body = response.json()
    assert "shoe-2" not in ids(body) and {group_of(i) for i in ids(body)} == {"shoes"}
    assert body["items"][0]["reason"] == "similar to Trail runner 2"
    missing = client_public.get("/api/v1/items/nothing-here/similar")
    assert missing.status_code == 404 and "nothing-here" in missing.json()["message"]


@pytest.mark.django_db
def test_trending_by_device_puts_what_mobile_visitors_like_first(client_public, shop):
    send(client_public, *[event(f"phone{i}", "home-6", minutes_ago=10, userAgent=MOBILE_UA) for i in range(4)])
    trending_forget()
    body = client_public.get("/api/v1/trending", {"device": "mobile", "n": 3}).json()
    assert ids(body)[0] == "home-6" and body["items"][0]["reason"] == "popular on mobile"
    unknown = client_public.get("/api/v1/trending", {"segment": "no-such-segment"})
    assert unknown.status_code == 404


@pytest.mark.django_db
def test_bad_parameters_are_400_and_name_the_parameter(client_public, shop):
    too_many = client_public.get("/api/v1/recommendations", {"anonymous_id": "v0", "n": 1000})
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["field"] == "n"
    missing = client_public.get("/api/v1/recommendations", {"n": 3})
    assert missing.status_code == 400 and "anonymous_id" in missing.json()["message"]
    exclude = client_public.get(
        "/api/v1/recommendations", {"anonymous_id": "v0", "exclude": ",".join(f"x{i}" for i in range(501))}
    )
    assert exclude.status_code == 400 and exclude.json()["message"].startswith("exclude:")


@pytest.mark.django_db
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(visitor=st.integers(0, 44), n=st.integers(1, 8), exclude=st.sets(st.sampled_from(ALL_ITEMS)))
def test_a_list_recomputed_from_the_model_equals_the_precomputed_one_when_nothing_happened_since(
    client_public, shop, visitor, n, exclude
):
    """Two paths, one answer: the published list (cache) and the one scored on read from the
    visitor's row rebuilt from training + history must agree while the visitor did nothing new."""
    from django.core.cache import cache

    from recommenders import cache_keys
    from recommenders.store import toplist_get

    anonymous_id = f"v{visitor}"
    profile = profile_by_anonymous_id(anonymous_id)
    params = {"anonymous_id": anonymous_id, "n": n, "exclude": ",".join(sorted(exclude))}
    cached = recommend(client_public, **params)
    assert cached["strategy"] == "cached"
    assert toplist_get(config_key="default", version=shop.version, profile_id=profile.pk) is not None
    cache.delete(cache_keys.toplist("default", shop.version, profile.pk))
    recomputed = recommend(client_public, **params)
    assert recomputed["strategy"] in ("recomputed", "session")
    assert ids(recomputed) == ids(cached)
    assert not set(ids(cached)) & exclude


@pytest.mark.django_db
def test_insight_page_shows_a_profiles_events_and_each_algorithms_picks_with_reasons(admin_client, client_public, shop):
    from privacy.models import AccessLog

    profile = profile_by_anonymous_id("v0")
    page = admin_client.get("/admin/recommenders/insight/", {"q": "v0"})
    assert page.status_code == 200
    html = page.content.decode()
    for heading in ("Recent events", "What the API serves", "Live model: ease v1", "Popularity", "ItemKNN", "Hybrid"):
        assert heading in html, heading
    assert "because you viewed Trail runner" in html and "product_view" in html
    assert AccessLog.objects.filter(profile_uuid=profile.uuid, detail="recommendation insight").exists()
    # Looking is not serving: nothing was logged as shown to the visitor.
    served_flush()
    assert not RecommendationServed.objects.exists()
    by_uuid = admin_client.get("/admin/recommenders/insight/", {"q": str(profile.uuid)})
    assert str(profile.uuid) in by_uuid.content.decode()
    assert "No profile" in admin_client.get("/admin/recommenders/insight/", {"q": "nobody"}).content.decode()


@pytest.mark.django_db
def test_insight_page_is_for_staff_only(client, shop):
    response = client.get("/admin/recommenders/insight/", {"q": "v0"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db(transaction=True)
def test_without_the_buffer_a_list_served_outside_a_transaction_is_logged_at_once(client_public, settings):
    """With the buffer off, the served log is one raw statement (no wait for the WAL flush)."""
    settings.RECOMMENDERS_SERVED_BUFFER = False
    catalogue()
    send(client_public, *journeys(visitors=12))
    shop = train()
    body = recommend(client_public, anonymous_id="v0", n=3, placement="pdp")
    served = RecommendationServed.objects.get(token=body["token"])
    assert (served.placement, served.items) == ("pdp", ids(body))
    assert served.model_version.version == shop.version and served.profile == profile_by_anonymous_id("v0")


@pytest.mark.django_db
def test_the_default_hybrid_serves_regulars_from_the_cache_and_newcomers_from_their_session(client_public):
    catalogue()
    send(client_public, *journeys())
    train(algorithm="hybrid")
    regular = recommend(client_public, anonymous_id="v1", n=3)
    assert regular["strategy"] == "cached" and {item["algorithm"] for item in regular["items"]} == {"hybrid"}
    assert {group_of(i) for i in ids(regular)} == {"bags"}
    send(client_public, event("first-timer", "home-2", minutes_ago=1), event("first-timer", "home-4", minutes_ago=0.5))
    newcomer = recommend(client_public, anonymous_id="first-timer", n=3)
    assert newcomer["strategy"] == "recomputed" and newcomer["personalized"]
    assert {group_of(i) for i in ids(newcomer)} == {"home"}
    assert not {"home-2", "home-4"} & set(ids(newcomer))
    assert newcomer["items"][0]["reason"].startswith("because you viewed Camp mug")


@pytest.mark.django_db
def test_erasure_removes_the_visitors_served_lists_and_feedback(client_public, shop):
    from privacy.services.subjects import subject_erase, subject_export

    body = recommend(client_public, anonymous_id="v0", n=3)
    client_public.post("/api/v1/feedback", {"anonymous_id": "v0", "item_id": ids(body)[0], "kind": "up"}, format="json")
    profile = profile_by_anonymous_id("v0")
    served_flush()
    exported = subject_export(profile=profile)
    assert exported["recommendations_served"][0]["items"] == ids(body)
    assert exported["recommendation_feedback"][0]["kind"] == "up"
    counts = subject_erase(profile=profile)
    assert counts["recommendations_served"] == 1 and counts["recommendation_feedback"] == 1
    assert not RecommendationServed.objects.filter(token=body["token"]).exists()


@pytest.mark.django_db
def test_a_cached_list_costs_one_query_the_visitor_lookup(client_public, shop, django_assert_max_num_queries):
    # Warm the key, purposes, placement and catalogue memos (a web process has them after a few pages).
    recommend(client_public, anonymous_id="v3", n=3)
    client_public.get("/api/v1/trending", {"n": 24})
    with django_assert_max_num_queries(1):
        body = recommend(client_public, anonymous_id="v4", n=3)
    assert body["strategy"] == "cached" and len(body["items"]) == 3


@pytest.mark.django_db
def test_page_views_since_the_publish_keep_the_cached_list_and_it_is_confirmed_for_next_time(
    client_public, shop, django_assert_max_num_queries
):
    before = recommend(client_public, anonymous_id="v7", n=3)
    page = {**event("v7", "", kind="page_view", minutes_ago=0.1), "properties": {"url": "https://shop.example/"}}
    send(client_public, page)
    client_public.get("/api/v1/trending", {"n": 24})
    after = recommend(client_public, anonymous_id="v7", n=3)  # reads their events: nothing about items
    assert after["strategy"] == "cached" and ids(after) == ids(before)
    with django_assert_max_num_queries(1):
        again = recommend(client_public, anonymous_id="v7", n=3)
    assert again["strategy"] == "cached" and ids(again) == ids(before)


@pytest.mark.django_db
def test_placement_rules_pin_bury_and_stock_apply_to_the_models_list(
    client_public, shop, django_capture_on_commit_callbacks
):
    before = recommend(client_public, anonymous_id="v0", n=3)
    top, second, third = ids(before)
    Placement.objects.create(key="pdp", n=3, rules={"pins": {"home-5": 0}, "buries": [top]})
    after = recommend(client_public, anonymous_id="v0", placement="pdp")
    assert ids(after) == ["home-5", second, third]
    assert (after["items"][0]["algorithm"], after["items"][0]["reason"]) == ("pinned", "featured")
    with django_capture_on_commit_callbacks(execute=True):  # announced once committed (see test_..._catalogue_memo)
        items_upsert(items=[{"external_id": second, "in_stock": False}])
    placements_forget()
    sold_out = recommend(client_public, anonymous_id="v0", placement="pdp")
    assert second not in ids(sold_out) and ids(sold_out)[:2] == ["home-5", third]


@pytest.mark.django_db
def test_category_cap_and_exploration_shape_a_placements_list(client_public, shop):
    Placement.objects.create(key="home", n=3, rules={"category_cap": 1, "exploration": 0.34, "mmr_lambda": 0.7})
    body = recommend(client_public, anonymous_id="v0", placement="home")
    assert len(body["items"]) == 3
    explored = [item for item in body["items"] if item["algorithm"] == "exploration"]
    ranked = [item["id"] for item in body["items"] if item["algorithm"] != "exploration"]
    assert len({group_of(i) for i in ranked}) == len(ranked) == 2  # at most one per category
    assert len(explored) == 1 and explored[0]["reason"] == "something new to discover"
    assert body["items"][0]["algorithm"] == "ease"  # the model keeps the first slot


@pytest.mark.django_db
def test_a_visitor_new_to_the_shop_gets_what_trends_in_their_segment(client_public, shop, settings):
    from segments.models import Segment, SegmentMembership

    settings.RECOMMENDERS_TRENDING_MIN_VISITORS = 2
    fans = [f"fan{i}" for i in range(3)]
    send(client_public, *[event(fan, "bag-6", minutes_ago=5) for fan in fans])
    page = {**event("lurker", "", kind="page_view", minutes_ago=1), "properties": {"url": "https://shop.example/"}}
    send(client_public, page)
    segment = Segment.objects.create(key="bag-lovers", name="Bag lovers", member_count=25)
    now = timezone.now()
    for anonymous_id in [*fans, "lurker"]:
        SegmentMembership.objects.create(segment=segment, profile=profile_by_anonymous_id(anonymous_id), entered_at=now)
    trending_forget()
    body = recommend(client_public, anonymous_id="lurker", n=2)
    assert body["strategy"] == "trending" and ids(body)[0] == "bag-6"
    assert body["items"][0]["reason"] == "trending in your segment Bag lovers"
    sliced = client_public.get("/api/v1/trending", {"segment": "bag-lovers", "n": 1}).json()
    assert ids(sliced) == ["bag-6"]

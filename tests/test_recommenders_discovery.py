"""Recently viewed items and items near a point: the simple lists marketers expect beside the models."""

import pytest

from recommenders.models import Item
from recommenders.services.catalogue import items_upsert
from tests.recommenders_helpers import personalization_withdraw, send, view

pytestmark = pytest.mark.django_db

PARIS, LYON, BERLIN = (48.8566, 2.3522), (45.7640, 4.8357), (52.5200, 13.4050)


def _stores():
    items_upsert(
        items=[
            {"external_id": "store-paris", "title": "Paris", "categories": ["store"], "attributes": {}},
            {"external_id": "store-lyon", "title": "Lyon", "categories": ["store"]},
            {"external_id": "store-berlin", "title": "Berlin", "categories": ["store"]},
            {"external_id": "outlet-paris", "title": "Paris outlet", "categories": ["outlet"]},
            {"external_id": "no-location", "title": "Online only", "categories": ["store"]},
        ]
    )
    for key, (lat, lon) in {
        "store-paris": PARIS,
        "store-lyon": LYON,
        "store-berlin": BERLIN,
        "outlet-paris": (48.86, 2.36),
    }.items():
        Item.objects.filter(external_id=key).update(latitude=lat, longitude=lon)


def test_nearest_items_are_ordered_by_distance_with_their_distance(client_public):
    _stores()
    body = client_public.get("/api/v1/items/nearest", {"near": "48.85,2.35", "category": "store"}).json()
    assert [i["id"] for i in body["items"]] == ["store-paris", "store-lyon", "store-berlin"]
    assert body["items"][0]["distance_km"] < 1 and 380 < body["items"][1]["distance_km"] < 420
    near = client_public.get("/api/v1/items/nearest", {"near": "48.85,2.35", "max_km": 50, "exclude": "store-paris"})
    assert [i["id"] for i in near.json()["items"]] == ["outlet-paris"]


def test_a_point_off_the_globe_or_malformed_is_a_clear_400(client_public):
    for near in ("91,0", "paris", "48.8"):
        response = client_public.get("/api/v1/items/nearest", {"near": near})
        assert response.status_code == 400, near
        assert "near" in response.json()["message"]


def test_recently_viewed_lists_the_visitors_distinct_items_newest_first(client_public):
    items_upsert(items=[{"external_id": f"sku-{i}", "title": f"Item {i}", "categories": ["c"]} for i in range(5)])
    send(
        client_public,
        view("v1", "sku-1", n=0, days_ago=3),
        view("v1", "sku-2", n=1, days_ago=2),
        view("v1", "sku-1", n=2, days_ago=1),
        view("v2", "sku-4", n=3, days_ago=1),
    )
    body = client_public.get("/api/v1/recently-viewed", {"anonymous_id": "v1"}).json()
    assert body["personalized"] is True
    assert [i["id"] for i in body["items"]] == ["sku-1", "sku-2"]
    only = client_public.get("/api/v1/recently-viewed", {"anonymous_id": "v1", "exclude": "sku-1"}).json()
    assert [i["id"] for i in only["items"]] == ["sku-2"]


def test_recently_viewed_is_empty_after_personalization_consent_is_withdrawn(client_public):
    items_upsert(items=[{"external_id": "sku-1", "title": "Item"}])
    send(client_public, view("v1", "sku-1", n=0))
    personalization_withdraw("v1")
    body = client_public.get("/api/v1/recently-viewed", {"anonymous_id": "v1"}).json()
    assert body == {"personalized": False, "items": []}


def test_recently_viewed_with_the_write_key_needs_the_visitors_own_anonymous_id(client_public):
    assert client_public.get("/api/v1/recently-viewed", {"user_id": "u-1"}).status_code == 403
    missing = client_public.get("/api/v1/recently-viewed")
    assert missing.status_code == 400 and "anonymous_id" in missing.json()["message"]

"""Catalogue API (bulk upsert with per-item errors, list, read, delete) and stub items created from
events that name items the catalogue does not know yet."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommenders.models import Item
from recommenders.services.catalogue import item_ids_in_properties
from tests.recommenders_helpers import send, view


def put(client, items, **kwargs):
    return client.put("/api/v1/items", {"items": items}, format="json", **kwargs)


@pytest.mark.django_db
def test_upsert_creates_then_updates_only_the_fields_given(client_secret):
    response = put(
        client_secret,
        [
            {"external_id": "sku-1", "title": "Trail runner", "categories": ["shoes"], "price": "89.90"},
            {"external_id": "sku-2", "title": "Daypack", "tags": ["waterproof"], "latitude": 48.85, "longitude": 2.35},
        ],
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {"created": 2, "updated": 0, "rejected": []}

    response = put(client_secret, [{"external_id": "sku-1", "in_stock": False}])
    assert response.json() == {"created": 0, "updated": 1, "rejected": []}
    item = Item.objects.get(external_id="sku-1")
    assert item.in_stock is False and item.title == "Trail runner" and item.categories == ["shoes"]
    assert str(item.price) == "89.90"


@pytest.mark.django_db
def test_bad_items_are_listed_with_where_and_why_and_good_ones_kept(client_secret):
    response = put(
        client_secret,
        [
            {"external_id": "ok-1", "title": "Fine"},
            {"external_id": "bad-price", "price": "-3"},
            {"title": "no id"},
            "not an object",
            {"external_id": "bad-dates", "available_from": "2026-02-01T00:00:00Z", "available_until": "2026-01-01"},
            {"external_id": "typo", "titel": "x"},
            {"external_id": "half-location", "latitude": 10},
        ],
    )
    assert response.status_code == 207
    body = response.json()
    assert body["created"] == 1
    where = {r["field"] for r in body["rejected"]}
    assert {
        "items[1].price",
        "items[2].external_id",
        "items[3]",
        "items[4].available_until",
        "items[5].titel",
        "items[6].latitude",
    } <= where
    assert next(r for r in body["rejected"] if r["index"] == 1)["external_id"] == "bad-price"
    assert list(Item.objects.values_list("external_id", flat=True)) == ["ok-1"]


@pytest.mark.django_db
def test_all_items_invalid_is_a_400_naming_the_first_problem(client_secret):
    response = put(client_secret, [{"external_id": ""}])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["message"].startswith("items[0].external_id:")


@pytest.mark.django_db
def test_more_than_1000_items_per_call_is_refused(client_secret):
    response = put(client_secret, [{"external_id": f"s{i}"} for i in range(1001)])
    assert response.status_code == 400
    assert "at most 1000" in response.json()["message"]
    assert not Item.objects.exists()


@pytest.mark.django_db
def test_catalogue_needs_a_secret_key(client_public):
    assert put(client_public, [{"external_id": "x"}]).status_code in (401, 403)
    assert client_public.get("/api/v1/items").status_code in (401, 403)


@pytest.mark.django_db
def test_list_read_and_delete_items(client_secret):
    put(
        client_secret,
        [
            {"external_id": "a", "categories": ["shoes"]},
            {"external_id": "b", "categories": ["bags"], "in_stock": False},
        ],
    )
    listed = client_secret.get("/api/v1/items?category=shoes").json()
    assert [i["external_id"] for i in listed["results"]] == ["a"]
    assert [i["external_id"] for i in client_secret.get("/api/v1/items?in_stock=false").json()["results"]] == ["b"]
    assert client_secret.get("/api/v1/items?stub=maybe").status_code == 400
    assert client_secret.get("/api/v1/items/a").json()["categories"] == ["shoes"]
    assert client_secret.delete("/api/v1/items/a").status_code == 204
    missing = client_secret.get("/api/v1/items/a")
    assert missing.status_code == 404 and "'a'" in missing.json()["message"]
    assert client_secret.delete("/api/v1/items/a").status_code == 404


@pytest.mark.django_db
def test_events_naming_unknown_items_create_stubs_that_an_upsert_completes(client_public, client_secret):
    put(client_secret, [{"external_id": "known", "title": "Known item"}])
    send(
        client_public,
        view("v1", "known", n=1),
        view("v1", "new-1", n=2),
        {
            "type": "purchase",
            "anonymous_id": "v1",
            "message_id": "order-1",
            "properties": {"items": ["new-2", 7], "products": [{"product_id": "new-3"}, {"item_id": "new-1"}]},
        },
    )
    stubs = dict(Item.objects.values_list("external_id", "is_stub"))
    assert stubs == {"known": False, "new-1": True, "new-2": True, "7": True, "new-3": True}
    assert Item.objects.get(external_id="known").title == "Known item", "a stub never overwrites a real item"
    put(client_secret, [{"external_id": "new-1", "title": "Now described"}])
    assert Item.objects.get(external_id="new-1").is_stub is False


@pytest.mark.django_db
def test_events_naming_items_the_process_knows_exist_cost_no_catalogue_statement(client_public, client_secret):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from recommenders.models import Item as ItemModel

    table = ItemModel._meta.db_table
    send(client_public, view("v1", "shoe-9", n=1))  # a stub, and the process now knows the id
    with CaptureQueriesContext(connection) as queries:
        send(client_public, view("v2", "shoe-9", n=2))
    assert not [q for q in queries.captured_queries if table in q["sql"]]
    # Deleted through the API: the next event naming it brings its stub back.
    assert client_secret.delete("/api/v1/items/shoe-9").status_code == 204
    send(client_public, view("v3", "shoe-9", n=3))
    assert Item.objects.get(external_id="shoe-9").is_stub is True


@given(
    properties=st.dictionaries(
        st.sampled_from(["item_id", "product_id", "products", "items", "other"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 5),
            st.text(max_size=5),
            st.lists(
                st.one_of(
                    st.text(max_size=4), st.integers(0, 3), st.fixed_dictionaries({"item_id": st.text(max_size=3)})
                ),
                max_size=3,
            ),
        ),
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_item_extraction_never_fails_on_hostile_properties(properties):
    ids = item_ids_in_properties(properties)
    assert all(isinstance(i, str) and 0 < len(i) <= 200 and i == i.strip() for i in ids)

"""The official Segment client (segment-analytics-python) against a live server: what it sends is stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from django.db import connection
from segment.analytics import Client
from segment.analytics import request as segment_request
from segment.analytics.request import post

from tracking.models import Event, Identity, Profile
from tracking.selectors import profile_by_uuid
from tracking.services.identity import identity_hash

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("transactional_db")]


@pytest.fixture
def segment(live_server, source):
    """Build Segment clients aimed at the live server; each records what its on_error saw."""
    clients: list[Client] = []

    def make(write_key: str | None = None, **options) -> Client:
        errors: list[tuple[Exception, list]] = []
        options.setdefault("upload_interval", 0.05)
        options.setdefault("max_retries", 1)
        client = Client(
            write_key=write_key or source.write_key,
            host=live_server.url,
            on_error=lambda exc, batch: errors.append((exc, batch)),
            **options,
        )
        client.errors = errors
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.consumers:
            client.join()
    http_connections_close()


def http_connections_close() -> None:
    """Close the library's kept-alive HTTP connections: each holds a live-server thread, and with it a
    database connection, open, and the test database could not be dropped at the end of the run. The
    installed urllib3 drops pools on `Session.close()` without closing them, and the log records of
    failed uploads keep them alive."""
    for adapter in segment_request._session.adapters.values():
        pools = adapter.poolmanager.pools
        for key in pools.keys():  # noqa: SIM118 (the container refuses plain iteration)
            pools[key].close()
        pools.clear()


def profile_of(anonymous_id: str) -> Profile:
    return Profile.objects.get(identities__kind=Identity.Kind.ANONYMOUS, identities__value=anonymous_id)


def rows_containing(table: str, needle: str) -> int:
    """Rows of a table whose whole text (every column, JSON included) contains `needle`, any case."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} AS t WHERE t::text ILIKE %s", [f"%{needle}%"])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_track_calls_are_stored_with_canonical_types_properties_and_value(segment, source, gzip):
    client = segment(gzip=gzip)
    order = {
        "order_id": "o-1001",
        "revenue": 59.9,
        "currency": "EUR",
        "products": [{"product_id": "sku-1", "price": 29.95, "quantity": 2}],
    }
    added = {"product_id": "sku-1", "price": 29.95, "quantity": 2, "name": "Café crème ☕"}
    client.track(anonymous_id="anon-buyer", event="Product Added", properties=added)
    client.track(anonymous_id="anon-buyer", event="Order Completed", properties=order)
    client.track(anonymous_id="anon-buyer", event="Wishlist Shared", properties={"list": "summer"})
    client.flush()

    assert client.errors == []
    events = {e.type: e for e in Event.objects.filter(source=source)}
    assert set(events) == {"add_to_cart", "purchase", "Wishlist Shared"}
    assert events["purchase"].properties == order
    assert events["purchase"].value == Decimal("59.90")
    assert events["add_to_cart"].properties == added
    assert events["add_to_cart"].value is None
    assert {e.kind for e in events.values()} == {"track"}
    assert events["purchase"].context["library"]["name"] == "analytics-python"
    profile = profile_of("anon-buyer")
    assert (profile.event_count, profile.purchase_count, profile.revenue) == (3, 1, Decimal("59.90"))


def test_identify_links_the_anonymous_profile_to_a_hashed_user_id(segment, source):
    client = segment()
    client.page(anonymous_id="anon-ada", name="Home")
    client.flush()
    before = profile_of("anon-ada")

    traits = {"email": "Ada.Lovelace@Example.com", "name": "Ada", "plan": "pro"}
    client.identify(user_id="user-8731", anonymous_id="anon-ada", traits=traits)
    client.track(user_id="user-8731", event="Product Viewed", properties={"product_id": "sku-9"})
    client.flush()

    assert client.errors == []
    profile = profile_of("anon-ada")
    assert profile.pk == before.pk
    identities = dict(profile.identities.values_list("kind", "value"))
    assert identities[Identity.Kind.USER] == identity_hash("user-8731")
    assert identities[Identity.Kind.USER] != "user-8731"
    assert identities[Identity.Kind.EMAIL] == identity_hash("ada.lovelace@example.com", kind=Identity.Kind.EMAIL)
    assert profile.traits == {"name": "Ada", "plan": "pro"}
    assert sorted(profile.events.values_list("type", flat=True)) == ["identify", "page_view", "product_view"]
    assert Profile.objects.count() == 1
    # The search does find what is stored in clear, so its zero counts below mean something.
    assert rows_containing("tracking_event", "anon-ada") == 2
    for table in ("tracking_event", "tracking_identity", "tracking_profile"):
        assert rows_containing(table, "user-8731") == 0, table
        assert rows_containing(table, "lovelace@example") == 0, table


def test_identify_merges_the_profile_of_another_device_of_the_same_user(segment, source):
    client = segment()
    # The phone: a known user.
    client.identify(user_id="user-42", anonymous_id="anon-phone", traits={"plan": "pro"})
    client.track(user_id="user-42", anonymous_id="anon-phone", event="Product Viewed", properties={"sku": "a"})
    client.flush()
    # The laptop: an anonymous visitor browsing, before logging in.
    client.page(anonymous_id="anon-laptop", name="Home")
    client.track(anonymous_id="anon-laptop", event="Product Added", properties={"sku": "b", "price": 10})
    client.flush()
    phone, laptop = profile_of("anon-phone"), profile_of("anon-laptop")
    assert phone.pk != laptop.pk

    client.identify(user_id="user-42", anonymous_id="anon-laptop", message_id="login-laptop")
    client.flush()

    assert client.errors == []
    assert Profile.objects.count() == 1
    merged = Profile.objects.get()
    assert merged.pk == phone.pk
    assert set(merged.identities.values_list("kind", "value")) == {
        (Identity.Kind.ANONYMOUS, "anon-phone"),
        (Identity.Kind.ANONYMOUS, "anon-laptop"),
        (Identity.Kind.USER, identity_hash("user-42")),
    }
    assert sorted(merged.events.values_list("type", flat=True)) == [
        "add_to_cart",
        "identify",
        "identify",
        "page_view",
        "product_view",
    ]
    assert merged.event_count == 5
    assert merged.traits == {"plan": "pro"}
    assert profile_by_uuid(laptop.uuid).pk == merged.pk

    def state():
        profile = Profile.objects.get()
        return Profile.objects.count(), Identity.objects.count(), Event.objects.count(), profile.event_count

    settled = state()
    # The SDK retrying the same login call changes nothing at all.
    client.identify(user_id="user-42", anonymous_id="anon-laptop", message_id="login-laptop")
    client.flush()
    assert state() == settled
    # Logging in again later stores that one call, and merges nothing more.
    client.identify(user_id="user-42", anonymous_id="anon-laptop")
    client.flush()
    profiles, identities, events, event_count = settled
    assert state() == (profiles, identities, events + 1, event_count + 1)
    assert client.errors == []


def test_page_screen_alias_and_group_calls_are_stored_with_their_types(segment, source):
    client = segment()
    client.page(anonymous_id="anon-p", category="Docs", name="Pricing", properties={"path": "/pricing"})
    client.screen(anonymous_id="anon-p", name="Checkout", properties={"step": 2})
    client.alias(previous_id="anon-p", user_id="user-p")
    client.group(user_id="user-p", group_id="acme", traits={"employees": 120})
    client.flush()

    assert client.errors == []
    events = {e.type: e for e in Event.objects.filter(source=source)}
    assert set(events) == {"page_view", "screen_view", "alias", "group"}
    assert {t: e.kind for t, e in events.items()} == {
        "page_view": "page",
        "screen_view": "screen",
        "alias": "alias",
        "group": "group",
    }
    assert events["page_view"].properties == {"path": "/pricing", "name": "Pricing", "category": "Docs"}
    assert events["screen_view"].properties == {"step": 2, "name": "Checkout"}
    assert events["group"].properties == {"group_id": "acme", "group_traits": {"employees": 120}}
    # The alias tied the user id to the anonymous visitor: everything is one profile.
    assert Profile.objects.count() == 1
    assert profile_of("anon-p").identities.filter(value=identity_hash("user-p")).exists()


def test_a_large_batch_sent_in_several_uploads_is_stored_exactly_once(segment, source):
    client = segment(upload_size=40, max_queue_size=1000)
    for i in range(250):
        client.track(anonymous_id=f"anon-{i % 7}", event="Product Viewed", properties={"i": i}, message_id=f"bulk-{i}")
    client.flush()

    assert client.errors == []
    stored = Event.objects.filter(source=source)
    assert stored.count() == 250
    assert set(stored.values_list("message_id", flat=True)) == {f"bulk-{i}" for i in range(250)}
    # Each upload is one request, stamped with its own receipt time.
    assert stored.values("received_at").distinct().count() >= -(-250 // 40)
    counts_before = sorted(Profile.objects.values_list("event_count", flat=True))
    assert sum(counts_before) == 250

    again = segment(upload_size=100, max_queue_size=1000)
    for i in range(250):
        again.track(anonymous_id=f"anon-{i % 7}", event="Product Viewed", properties={"i": i}, message_id=f"bulk-{i}")
    again.flush()

    assert again.errors == []
    assert Event.objects.filter(source=source).count() == 250
    assert sorted(Profile.objects.values_list("event_count", flat=True)) == counts_before


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=2)], ids=["clock_behind", "clock_ahead"])
def test_sender_clock_skew_is_corrected_with_sent_at(live_server, source, skew):
    # The client stamps sentAt itself when it uploads; build the call with it, then upload with a skewed clock.
    sender_now = datetime.now(UTC) + skew
    _, message = Client(write_key=source.write_key, send=False).track(
        anonymous_id="anon-skew", event="Product Viewed", timestamp=sender_now, message_id="skewed-1"
    )
    try:
        post(source.write_key, live_server.url, batch=[message], sentAt=sender_now.isoformat())
    finally:
        http_connections_close()

    stored = Event.objects.get(source=source, message_id="skewed-1")
    assert abs(stored.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_clock_skew_is_corrected_on_a_single_track_call(live_server, source):
    sender_now = datetime.now(UTC) - timedelta(hours=1)
    response = requests.post(
        f"{live_server.url}/v1/track",
        json={
            "anonymousId": "anon-skew",
            "event": "Product Viewed",
            "messageId": "skewed-2",
            "timestamp": (sender_now - timedelta(seconds=30)).isoformat(),
            "sentAt": sender_now.isoformat(),
        },
        auth=(source.write_key, ""),
        timeout=10,
    )

    assert response.status_code == 200, response.text
    stored = Event.objects.get(source=source, message_id="skewed-2")
    expected = datetime.now(UTC) - timedelta(seconds=30)
    assert abs(stored.timestamp - expected) < timedelta(minutes=1)


def test_an_unknown_write_key_reports_401_to_on_error_and_stores_nothing(segment, source):
    client = segment(write_key="pzw_" + uuid.uuid4().hex)
    client.track(anonymous_id="anon-x", event="Product Viewed")
    client.flush()

    assert len(client.errors) == 1
    error, batch = client.errors[0]
    assert error.status == 401
    assert [m["event"] for m in batch] == ["Product Viewed"]
    assert Event.objects.count() == 0
    assert Profile.objects.count() == 0

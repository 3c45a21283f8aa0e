"""Our own collection API: storage, exactly-once, partial batches, errors that say where."""

import gzip
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.factories import event
from tracking.models import Event, IngestRejection, Profile, ProfileEventStat

pytestmark = pytest.mark.django_db


def post(client, events, **extra):
    return client.post("/api/v1/events", {"events": events}, format="json", **extra)


def test_accepted_event_is_stored_with_profile_and_enrichment(client_public):
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile Safari/604.1"
    body = event(
        "add_to_cart",
        properties={"item_id": "sku-1", "price": 20},
        context={"page": {"url": "https://shop.example/p?utm_medium=cpc"}, "timezone": "Europe/Paris"},
    )
    response = post(client_public, [body], HTTP_USER_AGENT=ua, REMOTE_ADDR="203.0.113.77")
    assert response.status_code == 200, response.json()
    assert response.json() == {"accepted": 1, "duplicates": 0, "suppressed": 0, "rejected": []}
    stored = Event.objects.get()
    assert stored.type == "add_to_cart" and stored.kind == "track"
    assert stored.properties == {"item_id": "sku-1", "price": 20}
    assert (stored.device_type, stored.os, stored.traffic_source) == ("mobile", "iOS", "paid")
    assert stored.ip_truncated == "203.0.113.0"
    assert stored.local_hour == timezone.localtime(stored.timestamp, timezone=_paris()).hour
    profile = stored.profile
    assert profile.event_count == 1 and profile.session_count == 1
    assert profile.identities.get().value == "anon-1"


def _paris():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


def test_duplicate_message_id_is_stored_once(client_public):
    body = event("purchase", properties={"revenue": 30})
    first = post(client_public, [body])
    second = post(client_public, [body, body])
    assert first.json()["duplicates"] == 0
    assert second.status_code == 200
    assert second.json() == {"accepted": 2, "duplicates": 2, "suppressed": 0, "rejected": []}
    assert Event.objects.count() == 1
    profile = Profile.objects.get()
    assert (profile.event_count, profile.purchase_count, profile.revenue) == (1, 1, Decimal("30.00"))
    assert ProfileEventStat.objects.get(event_type="purchase").count == 1


def test_same_message_id_from_two_sources_is_two_events(client_public, client):
    from tests.factories import SourceFactory

    other = SourceFactory()
    body = event("page_view")
    post(client_public, [body])
    client.post("/api/v1/events", {"events": [body]}, content_type="application/json", HTTP_X_WRITE_KEY=other.write_key)
    assert Event.objects.count() == 2


def test_bad_event_in_batch_is_rejected_and_good_ones_stored(client_public):
    good = [event("page_view", n=i) for i in range(3)]
    future = event("page_view", n=9, timestamp=(timezone.now() + timedelta(days=3)).isoformat())
    no_id = {"type": "page_view", "message_id": "x"}
    response = post(client_public, [good[0], future, good[1], no_id, good[2], "nope"])
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 3
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {1, 3, 5}
    assert rejected[1]["field"] == "events[1].timestamp" and "future" in rejected[1]["error"]
    assert rejected[3]["field"] == "events[3].anonymous_id"
    assert rejected[5]["field"] == "events[5]" and "object" in rejected[5]["error"]
    assert set(Event.objects.values_list("message_id", flat=True)) == {e["message_id"] for e in good}
    assert IngestRejection.objects.get(reason="invalid").count == 3


def test_batch_with_nothing_valid_is_400_naming_the_field(client_public):
    response = post(client_public, [{"type": 5, "anonymous_id": "a"}])
    assert response.status_code == 400
    assert response.json()["message"].startswith("events[0].type:")
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"events": [', "line 1 column 13"),
        (b"", "empty"),
        (b'{"events": {}}', '"events" array'),
        (b"[1, 2]", '"events" array'),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_malformed_body_is_400_with_a_reason(client_public, body, fragment):
    response = client_public.generic("POST", "/api/v1/events", body, content_type="application/json")
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_unknown_write_key_is_401(client):
    response = client.post(
        "/api/v1/events", {"events": [event()]}, content_type="application/json", HTTP_X_WRITE_KEY="pzw_nope"
    )
    assert response.status_code == 401
    assert response.json() == {"error": "authentication_failed", "message": "unknown or inactive write key"}


def test_missing_write_key_is_401_saying_where_to_put_it(client, db):
    response = client.post("/api/v1/events", {"events": [event()]}, content_type="application/json")
    assert response.status_code == 401
    assert "X-Write-Key" in response.json()["message"]


def test_write_key_as_basic_user_or_query_parameter(client, source):
    import base64

    basic = base64.b64encode(f"{source.write_key}:".encode()).decode()
    first = client.post(
        "/api/v1/events", {"events": [event(n=1)]}, content_type="application/json", HTTP_AUTHORIZATION=f"Basic {basic}"
    )
    second = client.post(
        f"/api/v1/events?k={source.write_key}", json.dumps({"events": [event(n=2)]}), content_type="text/plain"
    )
    assert (first.status_code, second.status_code) == (200, 200)
    assert Event.objects.count() == 2


def test_browser_origin_must_be_allowed_by_the_source(client_public):
    allowed = post(client_public, [event(n=1)], HTTP_ORIGIN="https://shop.example")
    refused = post(client_public, [event(n=2)], HTTP_ORIGIN="https://evil.example")
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example"
    assert refused.status_code == 403
    assert "https://evil.example" in refused.json()["message"]
    # The refusal is readable by the page's script (so it stops retrying), the events are not stored.
    assert refused["Access-Control-Allow-Origin"] == "https://evil.example"
    assert Event.objects.count() == 1


def test_preflight_is_answered_for_browser_calls(client, db):
    response = client.options(
        "/api/v1/events", HTTP_ORIGIN="https://shop.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert response.status_code == 204
    assert "X-Write-Key" in response["Access-Control-Allow-Headers"]


def test_gzip_body_is_accepted(client_public):
    payload = gzip.compress(json.dumps({"events": [event()]}).encode())
    response = client_public.generic(
        "POST", "/api/v1/events", payload, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_event_over_32kb_is_413_alone_and_rejected_in_a_batch(client_public):
    big = event("page_view", n=1, properties={"blob": "x" * 40_000})
    alone = post(client_public, [big])
    mixed = post(client_public, [big, event(n=2)])
    assert alone.status_code == 413
    assert mixed.status_code == 207
    assert mixed.json()["rejected"][0]["field"] == "events[0]"
    assert Event.objects.count() == 1


def test_body_over_500kb_is_413(client_public):
    events = [event(n=i, properties={"pad": "y" * 20_000}) for i in range(30)]
    response = post(client_public, events)
    assert response.status_code == 413
    assert "limit" in response.json()["message"]
    assert not Event.objects.exists()


def test_sent_at_corrects_the_senders_clock(client_public):
    behind = timezone.now() - timedelta(hours=2)
    body = {"events": [event(timestamp=(behind - timedelta(seconds=5)).isoformat())], "sent_at": behind.isoformat()}
    client_public.post("/api/v1/events", body, format="json")
    stored = Event.objects.get()
    assert abs((timezone.now() - timedelta(seconds=5)) - stored.timestamp) < timedelta(seconds=5)


def test_message_id_derived_from_content_when_missing_so_retries_store_once(client_public):
    body = event()
    del body["message_id"]
    post(client_public, [body])
    post(client_public, [body])
    assert Event.objects.count() == 1
    assert Event.objects.get().message_id.startswith("auto-")


def test_aggregates_count_sessions_purchases_and_per_type_stats(client_public):
    start = timezone.now() - timedelta(days=2)
    times = [start, start + timedelta(minutes=5), start + timedelta(hours=3), start + timedelta(hours=3, minutes=1)]
    events = [
        event("page_view", n=0, timestamp=times[0].isoformat()),
        event("add_to_cart", n=1, timestamp=times[1].isoformat()),
        event("page_view", n=2, timestamp=times[2].isoformat()),
        event("purchase", n=3, timestamp=times[3].isoformat(), properties={"revenue": "99.90"}),
    ]
    post(client_public, events[:2])
    post(client_public, events[2:])
    profile = Profile.objects.get()
    assert profile.event_count == 4
    assert profile.session_count == 2
    assert (profile.purchase_count, profile.revenue) == (1, Decimal("99.90"))
    assert abs(profile.first_seen_at - times[0]) < timedelta(milliseconds=1)
    assert abs(profile.last_seen_at - times[3]) < timedelta(milliseconds=1)
    stats = {s.event_type: s.count for s in ProfileEventStat.objects.all()}
    assert stats == {"page_view": 2, "add_to_cart": 1, "purchase": 1}
    assert ProfileEventStat.objects.get(event_type="purchase").value_sum == Decimal("99.90")


def test_user_id_and_email_are_stored_only_as_keyed_hashes(client_public):
    from django.db import connection

    post(
        client_public,
        [event("identify", user_id="customer-4711", traits={"email": "Ann@Example.com", "plan": "plus"})],
    )
    profile = Profile.objects.get()
    assert profile.traits == {"plan": "plus"}
    kinds = set(profile.identities.values_list("kind", flat=True))
    assert kinds == {"anonymous", "user", "email"}
    with connection.cursor() as cursor:
        for table in ("tracking_event", "tracking_identity", "tracking_profile"):
            cursor.execute(
                f"SELECT count(*) FROM {table} t WHERE t::text ILIKE %s OR t::text ILIKE %s",
                ["%customer-4711%", "%ann@example.com%"],
            )
            assert cursor.fetchone()[0] == 0, table


def test_ip_is_never_stored_in_full(client_public):
    post(client_public, [event(context={"ip": "198.51.100.23"})], REMOTE_ADDR="192.0.2.55")
    stored = Event.objects.get()
    assert stored.ip_truncated == "198.51.100.0"
    assert stored.context["ip"] == "198.51.100.0"


def test_timeline_and_profile_api_need_a_secret_key(client_public, client_secret):
    start = timezone.now() - timedelta(hours=1)
    post(
        client_public, [event("page_view", n=i, timestamp=(start + timedelta(minutes=i)).isoformat()) for i in range(3)]
    )
    profile = Profile.objects.get()
    assert client_public.get(f"/api/v1/profiles/{profile.uuid}").status_code in (401, 403)
    detail = client_secret.get(f"/api/v1/profiles/{profile.uuid}").json()
    assert detail["event_count"] == 3
    assert detail["event_stats"][0]["event_type"] == "page_view"
    timeline = client_secret.get(f"/api/v1/profiles/{profile.uuid}/events").json()
    assert [e["message_id"] for e in timeline["results"]] == [f"page_view-anon-1-{i}" for i in (2, 1, 0)]


def test_visitor_reads_own_profile_with_public_key_and_anonymous_id(client_public):
    post(client_public, [event("page_view")])
    mine = client_public.get("/api/v1/profiles/me", {"anonymous_id": "anon-1"})
    other = client_public.get("/api/v1/profiles/me", {"anonymous_id": "someone-else"})
    assert mine.status_code == 200 and mine.json()["event_count"] == 1
    assert other.status_code == 404
    assert client_public.get("/api/v1/profiles").status_code in (401, 403)


def _aggregates(profile):
    profile.refresh_from_db()
    stats = sorted(profile.event_stats.values_list("event_type", "count", "value_sum", "first_at", "last_at"))
    return (
        profile.event_count,
        profile.session_count,
        profile.purchase_count,
        profile.revenue,
        profile.first_seen_at,
        profile.last_seen_at,
        profile.traits,
        profile.last_device_type,
        profile.last_traffic_source,
        stats,
    )


def test_one_by_one_and_batched_ingestion_give_the_same_profile(client_public):
    """Single events of a known visitor take a one-statement path; batches the general one."""
    start = timezone.now() - timedelta(days=5)
    offsets = [0, 3, 50, 47, 400, 402, 1440, 1, 3000]  # minutes; out of order on purpose
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
    plan = [
        ("page_view", {}, {}),
        ("add_to_cart", {"price": 5}, {}),
        ("purchase", {"revenue": "12.50"}, {"tier": "gold"}),
        ("page_view", {}, {"name": "Ann"}),
        ("purchase", {"revenue": 7}, {}),
        ("page_view", {}, {}),
        ("add_to_cart", {}, {"tier": "silver"}),
        ("page_view", {}, {}),
        ("purchase", {"total": 1}, {}),
    ]

    def events_for(visitor):
        return [
            event(
                kind,
                anonymous_id=visitor,
                n=i,
                timestamp=(start + timedelta(minutes=offsets[i])).isoformat(),
                properties=props,
                traits=traits or None,
                context={"userAgent": phone} if i == 8 else {"page": {"referrer": "https://www.google.com/"}},
            )
            for i, (kind, props, traits) in enumerate(plan)
        ]

    for body in events_for("one-by-one"):
        assert post(client_public, [body]).status_code == 200
    post(client_public, events_for("batched"))
    one = Profile.objects.get(identities__value="one-by-one")
    batched = Profile.objects.get(identities__value="batched")
    assert _aggregates(one) == _aggregates(batched)
    assert one.session_count == 5 and one.purchase_count == 3 and one.revenue == Decimal("20.50")
    assert one.last_device_type == "mobile"


def test_retried_single_event_of_known_visitor_is_stored_once(client_public):
    post(client_public, [event("page_view", n=1)])
    again = event("purchase", n=2, properties={"revenue": 3})
    assert post(client_public, [again]).json() == {"accepted": 1, "duplicates": 0, "suppressed": 0, "rejected": []}
    assert post(client_public, [again]).json() == {"accepted": 1, "duplicates": 1, "suppressed": 0, "rejected": []}
    profile = Profile.objects.get()
    assert (profile.event_count, profile.purchase_count, profile.revenue) == (2, 1, Decimal("3.00"))
    assert ProfileEventStat.objects.get(profile=profile, event_type="purchase").count == 1

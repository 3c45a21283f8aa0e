"""Consent before collection: regimes, decisions carried by events or set through the API, GPC,
withdrawal, policy versions; the single-event and batch paths agree."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from privacy.models import ConsentRecord, ConsentState, Purpose
from tests.factories import SourceFactory, event
from tracking.models import Event, Identity, IngestRejection, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def opt_in(db):
    return SourceFactory(consent_regime="opt_in")


@pytest.fixture
def client(opt_in):
    client = APIClient()
    client.credentials(HTTP_X_WRITE_KEY=opt_in.write_key)
    return client


def send(client, *events, **headers):
    response = client.post("/api/v1/events", {"events": list(events)}, format="json", **headers)
    assert response.status_code == 200, response.json()
    return response.json()


def consent(client, anonymous_id="v1", **purposes):
    response = client.post("/api/v1/consent", {"anonymous_id": anonymous_id, "purposes": purposes}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_opt_in_stores_nothing_about_an_undecided_visitor(client, opt_in):
    body = send(client, event("page_view", anonymous_id="v1", n=1))
    assert body["suppressed"] == 1 and body["accepted"] == 1
    batch = send(client, event("page_view", anonymous_id="v1", n=2), event("add_to_cart", anonymous_id="v1", n=3))
    assert batch["suppressed"] == 2
    assert not Event.objects.exists() and not Profile.objects.exists() and not Identity.objects.exists()
    assert IngestRejection.objects.get(source=opt_in, reason="no_consent:analytics").count == 3


def test_granting_through_the_api_starts_collection_and_withdrawal_stops_it_at_once(client):
    banner = client.get("/api/v1/consent", {"anonymous_id": "v1"}).json()
    assert banner["needs_decision"] is True
    assert [p["key"] for p in banner["purposes"]] == ["necessary", "analytics", "personalization", "marketing"]

    after = consent(client, analytics=True, marketing=False)
    assert after["needs_decision"] is True  # personalization still undecided
    assert {p["key"]: p["granted"] for p in after["purposes"]} == {
        "necessary": True,
        "analytics": True,
        "personalization": None,
        "marketing": False,
    }
    assert send(client, event("page_view", anonymous_id="v1", n=1))["suppressed"] == 0  # single-event path
    assert (
        send(client, event("page_view", anonymous_id="v1", n=2), event("page_view", anonymous_id="v1", n=3))[
            "suppressed"
        ]
        == 0
    )  # batch path

    consent(client, analytics=False)
    assert send(client, event("page_view", anonymous_id="v1", n=4))["suppressed"] == 1
    assert (
        send(client, event("page_view", anonymous_id="v1", n=5), event("x", anonymous_id="v1", n=6))["suppressed"] == 2
    )
    assert Event.objects.count() == 3
    statuses = list(
        ConsentRecord.objects.filter(purpose__key="analytics")
        .order_by("created_at", "id")
        .values_list("status", "origin")
    )
    assert statuses == [("granted", "banner"), ("withdrawn", "banner")]


def test_decisions_carried_by_an_event_apply_to_it(client):
    context = {"consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}}}
    body = send(client, event("page_view", anonymous_id="sdk", n=1, context=context))
    assert body["suppressed"] == 0
    profile = Profile.objects.get()
    states = dict(ConsentState.objects.filter(profile=profile).values_list("purpose__key", "granted"))
    assert states == {"analytics": True, "marketing": False}
    # Repeating the same preferences on every event records nothing new.
    send(client, event("page_view", anonymous_id="sdk", n=2, context=context))
    assert ConsentRecord.objects.count() == 2
    assert Event.objects.count() == 2


def test_a_refusal_carried_by_an_event_is_recorded_and_the_event_dropped(client):
    context = {"consent": {"categoryPreferences": {"analytics": False}}}
    assert send(client, event("page_view", anonymous_id="no", n=1, context=context))["suppressed"] == 1
    assert not Event.objects.exists()
    assert ConsentState.objects.get().granted is False  # the profile holds the choice, nothing else


def test_opt_out_collects_until_the_visitor_opts_out(client_public):
    assert send(client_public, event("page_view", anonymous_id="c", n=1))["suppressed"] == 0
    client_public.post("/api/v1/consent", {"anonymous_id": "c", "purposes": {"analytics": False}}, format="json")
    assert send(client_public, event("page_view", anonymous_id="c", n=2))["suppressed"] == 1
    assert Event.objects.count() == 1


def test_gpc_opts_out_of_marketing_only(client_public, db):
    Purpose.objects.filter(key="marketing").update(event_types=["ad_click"])
    body = send(
        client_public,
        event("page_view", anonymous_id="g", n=1),
        event("ad_click", anonymous_id="g", n=2),
        HTTP_SEC_GPC="1",
    )
    assert body["suppressed"] == 1
    assert list(Event.objects.values_list("type", flat=True)) == ["page_view"]
    record = ConsentRecord.objects.get()
    assert (record.purpose.key, record.status, record.origin) == ("marketing", "denied", "gpc")
    send(client_public, event("page_view", anonymous_id="g", n=3), HTTP_SEC_GPC="1")
    assert ConsentRecord.objects.count() == 1  # recorded once


def test_required_purposes_are_always_collected(client):
    Purpose.objects.filter(key="necessary").update(event_types=["checkout_error"])
    assert send(client, event("checkout_error", anonymous_id="any", n=1))["suppressed"] == 0
    assert Event.objects.count() == 1


def test_a_new_policy_version_requires_consent_again(client, opt_in):
    consent(client, analytics=True, personalization=True, marketing=True)
    assert send(client, event("page_view", anonymous_id="v1", n=1))["suppressed"] == 0
    opt_in.consent_policy_version = 2
    opt_in.save()
    from tracking import selectors

    selectors._local_sources.clear()
    from django.core.cache import cache

    cache.clear()
    assert send(client, event("page_view", anonymous_id="v1", n=2))["suppressed"] == 1
    assert client.get("/api/v1/consent", {"anonymous_id": "v1"}).json()["needs_decision"] is True
    consent(client, analytics=True, personalization=True, marketing=True)
    assert send(client, event("page_view", anonymous_id="v1", n=3))["suppressed"] == 0


def test_consent_follows_an_identity_merge(client):
    consent(client, anonymous_id="phone", analytics=True)
    send(client, event("identify", anonymous_id="phone", user_id="u1", n=1))
    # A second device, already identified as the same user, inherits the user's consent.
    assert send(client, event("page_view", anonymous_id="laptop", user_id="u1", n=2))["suppressed"] == 0
    assert Profile.objects.count() == 1


def test_user_id_consent_needs_a_secret_key(client, opt_in):
    refused = client.post("/api/v1/consent", {"user_id": "u", "purposes": {"analytics": True}}, format="json")
    assert refused.status_code == 403
    unknown = client.post("/api/v1/consent", {"anonymous_id": "x", "purposes": {"ads": True}}, format="json")
    assert unknown.status_code == 400 and "ads" in unknown.json()["message"]


def test_consent_is_exported_and_erased_with_the_person(client):
    consent(client, analytics=True)
    send(
        client,
        event("page_view", anonymous_id="v1", n=1, timestamp=(timezone.now() - timedelta(minutes=1)).isoformat()),
    )
    from privacy.services import subject_erase, subject_export

    profile = Profile.objects.get()
    exported = subject_export(profile=profile)
    assert [r["status"] for r in exported["consent_records"]] == ["granted"]
    subject_erase(profile=profile)
    assert not ConsentRecord.objects.exists() and not ConsentState.objects.exists()

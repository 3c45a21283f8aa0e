"""Identity stitching: linking anonymous ids to users, merging profiles, merges that follow old ids."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import event
from tracking.models import Event, Identity, Profile, ProfileEventStat, ProfileMerge
from tracking.selectors import profile_by_uuid
from tracking.services.identity import identity_hash, profile_merge

pytestmark = pytest.mark.django_db


def send(client, *events):
    response = client.post("/api/v1/events", {"events": list(events)}, format="json")
    assert response.status_code == 200, response.json()
    return response


def test_identify_links_anonymous_profile_to_new_user(client_public):
    send(client_public, event("page_view", anonymous_id="a1"))
    send(client_public, event("identify", anonymous_id="a1", user_id="u1", traits={"plan": "free"}))
    profile = Profile.objects.get()
    assert set(profile.identities.values_list("kind", "value")) == {
        ("anonymous", "a1"),
        ("user", identity_hash("u1")),
    }
    assert profile.traits == {"plan": "free"}


def test_identify_merges_anonymous_profile_into_existing_user_profile(client_public):
    earlier = timezone.now() - timedelta(days=3)
    send(
        client_public,
        event(
            "purchase",
            anonymous_id="phone",
            user_id="u1",
            n=1,
            timestamp=earlier.isoformat(),
            properties={"revenue": 10},
            traits={"plan": "plus"},
        ),
    )
    send(
        client_public, event("page_view", anonymous_id="laptop", n=2), event("add_to_cart", anonymous_id="laptop", n=3)
    )
    user_profile = Profile.objects.get(identities__value="phone")
    laptop_uuid = Profile.objects.get(identities__value="laptop").uuid
    send(client_public, event("identify", anonymous_id="laptop", user_id="u1", n=4, traits={"name": "Ann"}))

    assert Profile.objects.count() == 1
    merged = Profile.objects.get()
    assert merged.pk == user_profile.pk
    assert set(merged.identities.values_list("value", flat=True)) >= {"phone", "laptop"}
    assert merged.event_count == 4 and Event.objects.filter(profile=merged).count() == 4
    assert (merged.purchase_count, merged.revenue) == (1, Decimal("10.00"))
    assert merged.traits == {"plan": "plus", "name": "Ann"}
    assert abs(merged.first_seen_at - earlier) < timedelta(milliseconds=1)
    stats = dict(ProfileEventStat.objects.filter(profile=merged).values_list("event_type", "count"))
    assert stats == {"purchase": 1, "page_view": 1, "add_to_cart": 1, "identify": 1}
    # The merged-away id still resolves, to the surviving profile.
    assert profile_by_uuid(laptop_uuid).pk == merged.pk


def test_merging_twice_changes_nothing(client_public):
    send(client_public, event("page_view", anonymous_id="a", user_id="u", n=1))
    send(client_public, event("page_view", anonymous_id="b", n=2))
    identify = event("identify", anonymous_id="b", user_id="u", n=3)
    send(client_public, identify)
    snapshot = list(Profile.objects.values("pk", "event_count", "session_count"))
    send(client_public, event("identify", anonymous_id="b", user_id="u", n=4))
    send(client_public, identify)  # a retry of the first identify
    profile = Profile.objects.get()
    assert profile.pk == snapshot[0]["pk"]
    assert profile.event_count == snapshot[0]["event_count"] + 1
    merged_into = profile_merge(source_id=profile.pk, target_id=profile.pk)
    assert merged_into is None and Profile.objects.count() == 1


def test_links_within_one_batch_resolve_to_one_profile(client_public):
    send(
        client_public,
        event("page_view", anonymous_id="x1", n=1),
        event("page_view", anonymous_id="x2", n=2),
        event("identify", anonymous_id="x1", user_id="ux", n=3),
        event("identify", anonymous_id="x2", user_id="ux", n=4),
    )
    assert Profile.objects.count() == 1
    assert Profile.objects.get().event_count == 4


def test_alias_merges_previous_id_into_user(client):
    from tests.factories import SourceFactory

    source = SourceFactory()
    auth = {"HTTP_X_WRITE_KEY": source.write_key}
    client.post(
        "/v1/track",
        {"event": "Viewed", "anonymousId": "old-anon", "messageId": "1"},
        content_type="application/json",
        **auth,
    )
    client.post("/v1/identify", {"userId": "new-user", "messageId": "2"}, content_type="application/json", **auth)
    response = client.post(
        "/v1/alias",
        {"previousId": "old-anon", "userId": "new-user", "messageId": "3"},
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 200
    assert Profile.objects.count() == 1
    assert Identity.objects.filter(kind="anonymous", value="old-anon").get().profile.event_count == 3


def test_merge_moves_other_apps_data_through_the_signal(client_public):
    from tracking.services.identity import profile_merged

    calls = []

    def receiver(sender, source_id, target_id, **kwargs):
        calls.append((source_id, target_id))

    profile_merged.connect(receiver)
    try:
        send(client_public, event("page_view", anonymous_id="s1", user_id="su", n=1))
        send(client_public, event("page_view", anonymous_id="s2", n=2))
        source_pk = Profile.objects.get(identities__value="s2").pk
        target_pk = Profile.objects.get(identities__value="s1").pk
        send(client_public, event("identify", anonymous_id="s2", user_id="su", n=3))
    finally:
        profile_merged.disconnect(receiver)
    assert calls == [(source_pk, target_pk)]
    assert ProfileMerge.objects.filter(into_id=target_pk).count() == 1


def send_concurrently(source, batches_per_thread: list[list[list[dict]]]) -> list[Exception]:
    """Each thread posts its batches in turn, on its own connection; returns what went wrong."""
    from rest_framework.test import APIClient

    errors: list[Exception] = []

    def worker(batches):
        try:
            client = APIClient()
            client.credentials(HTTP_X_WRITE_KEY=source.write_key)
            for batch in batches:
                response = client.post("/api/v1/events", {"events": batch}, format="json")
                assert response.status_code == 200, response.content
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(batches,)) for batches in batches_per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_events_of_one_visitor_make_one_profile(source):
    plan = [[[event("page_view", anonymous_id="racer", n=n * 10 + i) for i in range(5)]] for n in range(6)]
    assert send_concurrently(source, plan) == []
    assert Profile.objects.count() == 1
    profile = Profile.objects.get()
    assert profile.event_count == 30 == Event.objects.count()


@pytest.mark.django_db(transaction=True)
def test_concurrent_single_events_of_one_new_visitor_make_one_profile(source):
    plan = [
        [[event("page_view", anonymous_id="first-visit", user_id="u-race", n=n * 10 + i)] for i in range(4)]
        for n in range(6)
    ]
    assert send_concurrently(source, plan) == []
    profile = Profile.objects.get()
    assert profile.event_count == 24 == Event.objects.count()
    assert profile.session_count == 1
    assert sorted(profile.identities.values_list("kind", flat=True)) == ["anonymous", "user"]
    assert not ProfileMerge.objects.exists()

"""Retention: raw events past a source's retention period are purged in batches; aggregates stay."""

from datetime import timedelta

import pytest
from django.utils import timezone

from personalization.celery import app as celery_app
from tests.factories import SourceFactory, event
from tracking.models import Event, Profile, ProfileEventStat
from tracking.services.retention import events_purge


def send(client, source, *events):
    response = client.post(
        "/api/v1/events", {"events": list(events)}, content_type="application/json", HTTP_X_WRITE_KEY=source.write_key
    )
    assert response.status_code == 200, response.json()


def ago(days):
    return (timezone.now() - timedelta(days=days)).isoformat()


@pytest.mark.django_db
def test_purge_removes_only_old_events_of_that_source_in_batches(client):
    kept_source, purged_source = SourceFactory(), SourceFactory()
    old = [event("page_view", n=i, timestamp=ago(40 + i)) for i in range(7)]
    send(client, purged_source, *old, event("purchase", n=99, timestamp=ago(2), properties={"revenue": 5}))
    send(client, kept_source, event("page_view", anonymous_id="other", n=1, timestamp=ago(400)))

    assert events_purge(source_id=purged_source.pk, older_than=timezone.now() - timedelta(days=30), batch=3) == 7
    assert list(Event.objects.filter(source=purged_source).values_list("type", flat=True)) == ["purchase"]
    assert Event.objects.filter(source=kept_source).count() == 1
    profile = Profile.objects.get(identities__value="anon-1")
    assert profile.event_count == 8  # aggregates summarise what was, they stay
    assert ProfileEventStat.objects.get(profile=profile, event_type="page_view").count == 7


@pytest.mark.django_db(transaction=True)
def test_nightly_task_applies_each_sources_retention(client):
    from celery.contrib.testing.worker import start_worker

    short = SourceFactory(retention_days=30)
    forever = SourceFactory()
    send(client, short, event("page_view", n=1, timestamp=ago(31)), event("page_view", n=2, timestamp=ago(29)))
    send(client, forever, event("page_view", anonymous_id="f", n=3, timestamp=ago(3000)))
    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        result = celery_app.send_task("privacy.retention_purge").get(timeout=15)
    assert result == {short.name: 1}
    assert Event.objects.filter(source=short).count() == 1
    assert Event.objects.filter(source=forever).count() == 1


def test_retention_purge_is_on_the_beat_schedule(settings):
    assert settings.CELERY_BEAT_SCHEDULE["retention-purge"]["task"] == "privacy.retention_purge"

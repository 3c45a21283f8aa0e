"""Membership: batch recompute (set-based, versioned, idempotent, history and size snapshots), the
real-time refresh after stored events (through a real Celery worker), merges and erasure."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from personalization.celery import app as celery_app
from segments import pending
from segments.models import Segment, SegmentMembership, SegmentMembershipChange, SegmentSizeSnapshot
from segments.receivers import realtime_index_forget
from segments.selectors import profile_segment_keys
from segments.services import (
    profile_segments_refresh,
    segment_create,
    segment_recompute,
    segment_update,
    segments_recompute_all,
)
from segments.signals import membership_changed
from tests.factories import event
from tests.test_segments_compiler import NOW, make_profile
from tracking.models import Profile

CARTS = {"kind": "event", "event": "add_to_cart", "measure": "count", "within": 7, "op": "gte", "value": 1}
DORMANT = {"kind": "profile", "field": "days_since_last_visit", "op": "gt", "value": 30}


def members(segment) -> set[int]:
    return set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))


def history(segment) -> list[tuple[int, str, str]]:
    return sorted(SegmentMembershipChange.objects.filter(segment=segment).values_list("profile_id", "kind", "via"))


def send(client, *events):
    response = client.post("/api/v1/events", {"events": list(events)}, format="json")
    assert response.status_code == 200, response.json()


@pytest.fixture(autouse=True)
def _fresh_index():
    realtime_index_forget()
    yield
    realtime_index_forget()


@pytest.mark.django_db
def test_recompute_adds_entrants_removes_leavers_and_records_both(source):
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    idle = make_profile(source, events=[{"type": "page_view", "days": 1}])
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    SegmentMembership.objects.create(segment=segment, profile=idle, entered_at=NOW - timedelta(days=9))

    result = segment_recompute(segment_id=segment.pk, now=NOW)

    assert (result.entered, result.left, result.size) == (1, 1, 1)
    assert members(segment) == {carter.pk}
    assert history(segment) == sorted([(carter.pk, "entered", "batch"), (idle.pk, "left", "batch")])
    segment.refresh_from_db()
    assert (segment.member_count, segment.computed_version) == (1, 1)
    assert list(SegmentSizeSnapshot.objects.filter(segment=segment).values_list("size", flat=True)) == [1]


@pytest.mark.django_db
def test_recomputing_twice_changes_nothing_the_second_time(source):
    make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    segment_recompute(segment_id=segment.pk, now=NOW)
    before = (members(segment), history(segment))

    again = segment_recompute(segment_id=segment.pk, now=NOW)

    assert (again.entered, again.left, again.size) == (0, 0, 1)
    assert (members(segment), history(segment)) == before
    assert SegmentSizeSnapshot.objects.filter(segment=segment).count() == 2  # one point per recompute


@pytest.mark.django_db
def test_a_recompute_queued_for_an_older_version_does_nothing(source):
    make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS, version=3, computed_version=3)
    assert segment_recompute(segment_id=segment.pk, version=2, now=NOW).skipped == "stale"
    assert members(segment) == set()
    assert segment_recompute(segment_id=segment.pk, version=3, now=NOW).size == 1


@pytest.mark.django_db
def test_time_based_rules_change_with_the_scheduled_recompute_alone(source):
    visitor = make_profile(source, events=[{"type": "page_view", "days": 10}])
    segment = Segment.objects.create(key="dormant", name="Dormant", rule=DORMANT)
    segment_recompute(segment_id=segment.pk, now=NOW)
    assert members(segment) == set()
    segment_recompute(segment_id=segment.pk, now=NOW + timedelta(days=21))  # 31 days without a visit
    assert members(segment) == {visitor.pk}


@pytest.mark.django_db
def test_changing_the_rule_bumps_the_version_and_recomputes(source, django_capture_on_commit_callbacks, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    celery_app.conf.task_always_eager = True
    try:
        french = make_profile(source, traits={"country": "FR"})
        german = make_profile(source, traits={"country": "DE"})
        with django_capture_on_commit_callbacks(execute=True):
            segment = segment_create(
                key="fr", name="FR", rule={"kind": "trait", "name": "country", "op": "eq", "value": "FR"}
            )
        assert members(segment) == {french.pk}
        with django_capture_on_commit_callbacks(execute=True):
            segment = segment_update(
                segment=segment, rule={"kind": "trait", "name": "country", "op": "eq", "value": "DE"}
            )
        segment.refresh_from_db()
        assert (segment.version, segment.computed_version) == (2, 2)
        assert members(segment) == {german.pk}
    finally:
        celery_app.conf.task_always_eager = False


@pytest.mark.django_db
def test_recompute_all_queues_every_active_segment_and_skips_paused_ones(source, monkeypatch):
    queued = []
    monkeypatch.setattr("segments.tasks.segment_recompute_task.delay", lambda *args: queued.append(args))
    active = Segment.objects.create(key="a", name="a", rule=CARTS, version=4)
    Segment.objects.create(key="p", name="p", rule=CARTS, status=Segment.Status.PAUSED)
    assert segments_recompute_all() == [active.pk]
    assert queued == [(active.pk, 4)]


@pytest.mark.django_db
def test_realtime_refresh_enters_and_leaves_and_announces_it(source, django_capture_on_commit_callbacks):
    profile = make_profile(source, events=[{"type": "page_view", "days": 1}], now=timezone.now())
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    dormant = Segment.objects.create(key="dormant", name="Dormant", rule=DORMANT)
    heard = []

    def listener(sender, **kwargs):
        heard.append((kwargs["segment_id"], kwargs["profile_id"], kwargs["kind"], kwargs["via"]))

    membership_changed.connect(listener)
    try:
        assert profile_segments_refresh(profile_id=profile.pk, event_types=["add_to_cart"]) == []
        make_profile(source)  # someone else
        from tracking.models import Event, ProfileEventStat

        now = timezone.now()
        Event.objects.create(
            source=source, profile=profile, message_id="m1", type="add_to_cart", timestamp=now, received_at=now
        )
        ProfileEventStat.objects.create(profile=profile, event_type="add_to_cart", count=1, first_at=now, last_at=now)
        with django_capture_on_commit_callbacks(execute=True):
            with_changes = profile_segments_refresh(profile_id=profile.pk, event_types=["add_to_cart"])
        assert [(c.segment_key, c.kind) for c in with_changes] == [("carts", "entered")]
        assert profile_segment_keys(profile_id=profile.pk) == ["carts"]
        Event.objects.filter(profile=profile, type="add_to_cart").update(timestamp=now - timedelta(days=8))
        ProfileEventStat.objects.filter(profile=profile).update(last_at=now - timedelta(days=8))
        with django_capture_on_commit_callbacks(execute=True):
            left = profile_segments_refresh(profile_id=profile.pk, event_types=None)
        assert [(c.segment_key, c.kind) for c in left] == [("carts", "left")]
    finally:
        membership_changed.disconnect(listener)
    assert heard == [(segment.pk, profile.pk, "entered", "realtime"), (segment.pk, profile.pk, "left", "realtime")]
    assert members(dormant) == set()  # page views in the last days: not dormant, never touched


@pytest.mark.django_db
@pytest.mark.skipif("not __import__('segments.pending').pending.redis_available()", reason="needs Redis")
def test_only_segments_that_can_change_are_refreshed_after_an_event(
    source, client_public, monkeypatch, django_capture_on_commit_callbacks, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    drains = []
    monkeypatch.setattr("segments.tasks.profiles_refresh_task.apply_async", lambda *a, **kw: drains.append(kw))
    Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    with django_capture_on_commit_callbacks(execute=True):
        send(client_public, event("page_view", anonymous_id="v1", n=1))
    assert pending.pending_peek() == [] and drains == []  # no segment reads page views
    with django_capture_on_commit_callbacks(execute=True):
        send(client_public, event("add_to_cart", anonymous_id="v1", n=2), event("add_to_cart", anonymous_id="v2", n=3))
        send(client_public, event("add_to_cart", anonymous_id="v1", n=4))  # same burst: waits for the same refresh
    ids = {a: Profile.objects.get(identities__value=a).pk for a in ("v1", "v2")}
    assert pending.pending_peek() == sorted([f"{ids['v1']}:add_to_cart", f"{ids['v2']}:add_to_cart"])
    assert drains == [{"countdown": settings.SEGMENTS_REALTIME_DEBOUNCE_SECONDS}]  # one message for all of it


@pytest.mark.django_db
@pytest.mark.skipif("not __import__('segments.pending').pending.redis_available()", reason="needs Redis")
def test_the_drain_refreshes_what_is_due_and_leaves_the_rest(source, settings, monkeypatch):
    from segments.tasks import profiles_refresh_task

    later = []
    monkeypatch.setattr("segments.tasks.profiles_refresh_task.apply_async", lambda *a, **kw: later.append(kw))
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 0}], now=timezone.now())
    waiting = make_profile(source, events=[{"type": "add_to_cart", "days": 0}], now=timezone.now())
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    pending.pending_add([(carter.pk, "add_to_cart")], delay=0)
    pending.pending_add([(waiting.pk, "add_to_cart")], delay=30)

    assert profiles_refresh_task() == 1

    assert members(segment) == {carter.pk}
    assert pending.pending_peek() == [f"{waiting.pk}:add_to_cart"]
    assert len(later) == 1 and 10 < later[0]["countdown"] <= 30  # scheduled again for the one still waiting


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a worker thread needs a real database server")
def test_a_stored_event_moves_the_visitor_into_a_segment_through_the_worker(client_public, settings):
    from celery.contrib.testing.worker import start_worker

    settings.SEGMENTS_REALTIME_DEBOUNCE_SECONDS = 0.1
    # Created without queueing a recompute: a recompute that the worker ran after the event would
    # record the entry as "batch" (a race with the path under test).
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    segment_recompute(segment_id=segment.pk)
    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        send(client_public, event("add_to_cart", anonymous_id="rt", n=1, properties={"item_id": "sku-001"}))
        profile = Profile.objects.get(identities__value="rt")
        deadline = time.monotonic() + 40  # generous: a loaded CI machine is slow to schedule the worker
        while time.monotonic() < deadline and not members(segment):
            time.sleep(0.1)
    assert members(segment) == {profile.pk}
    assert history(segment) == [(profile.pk, "entered", "realtime")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="concurrency needs Postgres")
def test_concurrent_recomputes_of_one_segment_record_each_change_once(source):
    people = [make_profile(source, events=[{"type": "add_to_cart", "days": 1}]) for _ in range(30)]
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    errors = []

    def run():
        try:
            segment_recompute(segment_id=segment.pk, now=NOW)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert members(segment) == {p.pk for p in people}
    assert SegmentMembershipChange.objects.filter(segment=segment).count() == 30


@pytest.mark.django_db
def test_memberships_follow_a_profile_merge(client_public, django_capture_on_commit_callbacks):
    segment = Segment.objects.create(key="fr", name="FR", rule={"kind": "trait", "name": "country", "op": "exists"})
    send(client_public, event("page_view", anonymous_id="phone", user_id="u1", n=1))
    send(client_public, event("page_view", anonymous_id="laptop", n=2))
    laptop = Profile.objects.get(identities__value="laptop")
    SegmentMembership.objects.create(segment=segment, profile=laptop, entered_at=timezone.now())
    SegmentMembershipChange.objects.create(
        segment=segment, profile=laptop, kind="entered", at=timezone.now(), via="batch"
    )
    with django_capture_on_commit_callbacks(execute=False):
        send(client_public, event("identify", anonymous_id="laptop", user_id="u1", n=3))
    survivor = Profile.objects.get()
    assert members(segment) == {survivor.pk}
    assert history(segment) == [(survivor.pk, "entered", "batch")]


@pytest.mark.django_db
def test_export_names_the_segments_and_erasure_removes_memberships_history_and_scores(source):
    from privacy.services.subjects import subject_erase, subject_export
    from segments.models import ProfileScore

    profile = make_profile(source)
    segment = Segment.objects.create(key="vip", name="VIPs", rule=DORMANT)
    SegmentMembership.objects.create(segment=segment, profile=profile, entered_at=NOW)
    SegmentMembershipChange.objects.create(segment=segment, profile=profile, kind="entered", at=NOW, via="batch")
    ProfileScore.objects.create(profile=profile, name="churn_risk", value=0.4, computed_at=NOW)

    exported = subject_export(profile=profile)
    assert exported["segment_memberships"] == [{"segment": "vip", "segment_name": "VIPs", "entered_at": NOW}]
    assert exported["segment_membership_history"] == [{"segment": "vip", "kind": "entered", "at": NOW, "via": "batch"}]
    assert [row["value"] for row in exported["profile_scores"]] == [0.4]

    counts = subject_erase(profile=profile)
    assert (counts["segment_memberships"], counts["segment_membership_history"], counts["profile_scores"]) == (1, 1, 1)
    assert not SegmentMembership.objects.exists() and not ProfileScore.objects.exists()


def test_the_scheduled_recompute_is_a_registered_task_on_the_beat_schedule(settings):
    import segments.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does

    assert settings.CELERY_BEAT_SCHEDULE["segments-recompute"]["task"] == "segments.recompute_all"
    assert {
        "segments.recompute",
        "segments.recompute_all",
        "segments.profile_refresh",
        "segments.profiles_refresh",
    } <= set(celery_app.tasks)


@pytest.mark.django_db
@pytest.mark.skipif("not __import__('segments.pending').pending.redis_available()", reason="needs Redis")
def test_a_burst_keeps_its_first_due_time_and_claims_the_drain_once():
    pending.drain_release()
    assert pending.pending_add([(7, "add_to_cart"), (8, "page")], delay=5) is True  # nothing scheduled yet
    first = pending.pending_next_due()
    assert pending.pending_add([(7, "add_to_cart")], delay=60) is False  # a drain is already scheduled
    assert pending.pending_next_due() == first  # the burst waits for its first refresh, not the last event
    assert pending.pending_peek() == ["7:add_to_cart", "8:page"]
    pending.drain_release()
    assert pending.pending_add([(9, "page")], delay=5) is True

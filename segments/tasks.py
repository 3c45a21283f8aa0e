"""Celery tasks of the segments app: they take ids and versions and call one service each."""

import time

from celery import shared_task
from django.db import OperationalError

from segments import pending
from segments.services.membership import profile_segments_refresh, segment_recompute, segments_recompute_all

DRAIN_BATCH = 500  # profiles popped at a time
DRAIN_ROUNDS = 40  # then the task ends and reschedules itself, so one run stays bounded


@shared_task(
    name="segments.recompute",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def segment_recompute_task(segment_id: int, version: int | None = None) -> dict:
    """Recompute one segment (queued when its rule changes, from the API, and by recompute_all). A run
    for a version older than the one already computed does nothing."""
    result = segment_recompute(segment_id=segment_id, version=version)
    return {"size": result.size, "entered": result.entered, "left": result.left, "skipped": result.skipped}


@shared_task(name="segments.recompute_all", acks_late=True, autoretry_for=(OperationalError,), max_retries=3)
def segments_recompute_all_task() -> int:
    """Beat, every 15 minutes: queue a recompute of every active segment."""
    return len(segments_recompute_all())


@shared_task(
    name="segments.profile_refresh",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def profile_refresh_task(profile_id: int, event_types: list[str] | None = None) -> int:
    """Real time: re-evaluate one profile's segments after new events of these types."""
    if event_types and not pending.redis_available():
        pending.pending_release(profile_id, event_types)
    return len(profile_segments_refresh(profile_id=profile_id, event_types=event_types))


@shared_task(name="segments.profiles_refresh", acks_late=True, autoretry_for=(OperationalError,), max_retries=3)
def profiles_refresh_task() -> int:
    """Real time: refresh the profiles whose refresh is due (queued by the events_stored receiver in
    Redis, see segments.pending), then schedule itself again while some are waiting."""
    from django.conf import settings

    pending.drain_release()  # events from now on may schedule another drain; entries are popped atomically
    changed = 0
    for _ in range(DRAIN_ROUNDS):
        due = pending.pending_pop(limit=DRAIN_BATCH)
        if not due:
            break
        for profile_id, event_types in due.items():
            changed += len(profile_segments_refresh(profile_id=profile_id, event_types=event_types))
    next_due = pending.pending_next_due()
    if next_due is not None and pending.drain_claim(delay=settings.SEGMENTS_REALTIME_DEBOUNCE_SECONDS):
        profiles_refresh_task.apply_async(countdown=max(0.05, next_due - time.time()))
    return changed


# The ML scores' task lives in its own module; importing it here registers it wherever Celery
# autodiscovers `segments.tasks` (worker and beat), whether or not the admin is loaded.
from segments import tasks_ml  # noqa: E402, F401

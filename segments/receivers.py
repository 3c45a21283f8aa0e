"""How segments hear about the rest of the platform: stored events (real-time refresh) and merges."""

from __future__ import annotations

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from segments import pending
from segments.models import Segment
from tracking.models import Profile
from tracking.services.identity import profile_merged
from tracking.signals import StoredEvent, events_stored


def _realtime_index() -> tuple[set[str], bool]:
    """Event types some active segment listens to, and whether one listens to every event (from the
    per-process list of active segments: this runs in the ingestion request)."""
    from segments.services.realtime import active_segments

    types: set[str] = set()
    any_event = False
    for segment in active_segments():
        types |= segment.deps.event_types
        any_event = any_event or segment.deps.any_event
    return types, any_event


def realtime_index_forget() -> None:
    from segments.services.realtime import active_segments_forget

    active_segments_forget()


@receiver(post_save, sender=Segment, dispatch_uid="segments.forget_active_saved")
@receiver(post_delete, sender=Segment, dispatch_uid="segments.forget_active_deleted")
def segments_changed(sender, **kwargs) -> None:
    realtime_index_forget()


@receiver(events_stored, sender=StoredEvent, dispatch_uid="segments.realtime")
def segments_on_events(sender, *, source_id: int, events: list[StoredEvent], **kwargs) -> None:
    """Queue a refresh of each profile for the event types some segment listens to, due after
    SEGMENTS_REALTIME_DEBOUNCE_SECONDS, once per burst (see segments.pending): one Redis round trip
    per request, and a Celery message only when no drain is scheduled yet."""
    if not settings.SEGMENTS_REALTIME:
        return
    types, any_event = _realtime_index()
    if not types and not any_event:
        return
    by_profile: dict[int, set[str]] = defaultdict(set)
    for event in events:
        if any_event or event.type in types:
            by_profile[event.profile_id].add(event.type)
    if not by_profile:
        return
    from segments.tasks import profile_refresh_task, profiles_refresh_task

    if settings.CELERY_TASK_ALWAYS_EAGER:  # embedded: refresh inline, nothing to debounce
        for profile_id, types in by_profile.items():
            wanted = sorted(types)
            transaction.on_commit(lambda p=profile_id, w=wanted: profile_refresh_task.delay(p, w))
        return
    delay = settings.SEGMENTS_REALTIME_DEBOUNCE_SECONDS
    pairs = [(profile_id, t) for profile_id, types in by_profile.items() for t in sorted(types)]
    if pending.redis_available():
        if pending.pending_add(pairs, delay=delay):
            transaction.on_commit(lambda: profiles_refresh_task.apply_async(countdown=delay))
        return
    wanted: dict[int, list[str]] = defaultdict(list)
    for (profile_id, event_type), free in zip(pairs, pending.pending_claim(pairs), strict=True):
        if free:
            wanted[profile_id].append(event_type)
    for profile_id, types in wanted.items():
        transaction.on_commit(lambda p=profile_id, w=types: profile_refresh_task.apply_async((p, w), countdown=delay))


@receiver(profile_merged, sender=Profile, dispatch_uid="segments.merge")
def segments_on_merge(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    """Memberships, history and scores follow a merge (inside the merge's transaction); then the merged
    profile's segments are re-evaluated, since its combined behaviour may match others."""
    from segments.models import ProfileScore, SegmentMembership, SegmentMembershipChange

    theirs = SegmentMembership.objects.filter(profile_id=target_id).values_list("segment_id", flat=True)
    SegmentMembership.objects.filter(profile_id=source_id).exclude(segment_id__in=list(theirs)).update(
        profile_id=target_id
    )
    SegmentMembership.objects.filter(profile_id=source_id).delete()
    SegmentMembershipChange.objects.filter(profile_id=source_id).update(profile_id=target_id)
    ours = {s.name: s for s in ProfileScore.objects.filter(profile_id=target_id)}
    for score in ProfileScore.objects.filter(profile_id=source_id):
        kept = ours.get(score.name)
        if kept is None:
            continue
        if score.computed_at > kept.computed_at:
            kept.delete()
        else:
            score.delete()
    ProfileScore.objects.filter(profile_id=source_id).update(profile_id=target_id)
    if settings.SEGMENTS_REALTIME:
        from segments.tasks import profile_refresh_task

        transaction.on_commit(lambda: profile_refresh_task.delay(target_id, None))

"""Reads of event collection: key look-ups, profiles and their timelines."""

from __future__ import annotations

import time
import uuid

from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from tracking import cache_keys
from tracking.keys import secret_key_hash
from tracking.models import Event, Identity, Profile, ProfileMerge, SecretKey, Source

_local_sources: dict[str, tuple[float, Source | None]] = {}


def source_by_write_key(key: str) -> Source | None:
    """The active source whose public write key this is (cached; revocation applies within a minute)."""
    if not key or len(key) > 64 or "\x00" in key:
        return None
    now = time.monotonic()
    hit = _local_sources.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    cache_key = cache_keys.write_key(key)
    source = cache.get(cache_key)
    if source is None:
        source = Source.objects.filter(write_key=key, is_active=True).first() or False
        cache.set(cache_key, source, cache_keys.WRITE_KEY_TTL)
    if len(_local_sources) > 1000:
        _local_sources.clear()
    _local_sources[key] = (now + cache_keys.LOCAL_TTL, source or None)
    return source or None


def secret_key_lookup(plaintext: str) -> SecretKey | None:
    """The active secret key matching this plaintext, with its source (cached by hash)."""
    if not plaintext or len(plaintext) > 128:
        return None
    key_hash = secret_key_hash(plaintext)
    cache_key = cache_keys.secret_key(key_hash)
    key = cache.get(cache_key)
    if key is None:
        key = (
            SecretKey.objects.select_related("source")
            .filter(key_hash=key_hash, revoked_at__isnull=True, source__is_active=True)
            .first()
        ) or False
        if key:
            SecretKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
        cache.set(cache_key, key, cache_keys.SECRET_KEY_TTL)
    return key or None


def profile_by_anonymous_id(anonymous_id: str) -> Profile | None:
    return Profile.objects.filter(identities__kind=Identity.Kind.ANONYMOUS, identities__value=anonymous_id).first()


def profile_by_uuid(profile_uuid: uuid.UUID | str) -> Profile | None:
    """A profile by its id, following merges: an id merged into another profile still resolves."""
    profile = Profile.objects.filter(uuid=profile_uuid).first()
    if profile is None:
        merge = ProfileMerge.objects.select_related("into").filter(merged_uuid=profile_uuid).first()
        profile = merge.into if merge else None
    return profile


def profile_timeline(*, profile: Profile) -> QuerySet[Event]:
    return Event.objects.filter(profile=profile).order_by("-timestamp", "-id")


def profile_list() -> QuerySet[Profile]:
    return Profile.objects.order_by("-last_seen_at", "-id")


def collection_overview(*, days: int = 14) -> dict:
    """Figures for the admin dashboard: events per day, top event types, profiles, refusals."""
    from datetime import timedelta

    from django.db.models import Count, Sum
    from django.db.models.functions import TruncDate

    from tracking.models import IngestRejection

    now = timezone.now()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = dict(
        Event.objects.filter(timestamp__gte=since)
        .annotate(day=TruncDate("timestamp"))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    day_list = [(since + timedelta(days=i)).date() for i in range(days)]
    week = now - timedelta(days=7)
    return {
        "days": day_list,
        "events_per_day": [per_day.get(day, 0) for day in day_list],
        "events_24h": Event.objects.filter(timestamp__gte=now - timedelta(hours=24)).count(),
        "profiles": Profile.objects.count(),
        "active_profiles_7d": Profile.objects.filter(last_seen_at__gte=week).count(),
        "top_types_7d": list(
            Event.objects.filter(timestamp__gte=week)
            .values_list("type")
            .annotate(n=Count("id"))
            .order_by("-n")
            .values_list("type", "n")[:8]
        ),
        "refused_7d": IngestRejection.objects.filter(day__gte=week.date()).aggregate(n=Sum("count"))["n"] or 0,
    }

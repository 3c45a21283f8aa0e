"""Profiles waiting for a real-time refresh (the only raw Redis use of segments).

The ingestion request must stay fast, so it neither evaluates segments nor publishes a Celery message
per visitor. It adds "profile:event type" to a Redis sorted set, scored with the time the refresh is
due (now + the debounce delay; ZADD NX keeps the first, so a burst of events waits for one refresh),
and claims a short-lived "drain scheduled" flag in the same round trip. Only the request that wins
the flag publishes the drain task (segments.profiles_refresh), which pops what is due, refreshes
those profiles and schedules itself again while entries remain. A drain lost with its worker costs
nothing lasting: the flag expires, the entries stay, and the next event (or the scheduled
recompute) catches up.

Without Redis (another cache backend) callers fall back to one task per profile.
"""

from __future__ import annotations

import time

from django.core.cache import cache

from personalization.hot_redis import hot_pipeline, redis_client
from segments import cache_keys

_POP = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #items > 0 then redis.call('ZREM', KEYS[1], unpack(items)) end
return items
"""


def _client():
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except (ImportError, NotImplementedError):
        return None


def _key(name: str) -> str:
    return cache.make_and_validate_key(name)


def redis_available() -> bool:
    return _client() is not None


def pending_add(pairs: list[tuple[int, str]], *, delay: float) -> bool:
    """Queue refreshes of (profile id, event type) due in `delay` seconds, in one round trip (on the
    request thread's own connection: this runs in event requests). True when the caller must
    schedule the drain (no drain was scheduled)."""
    due = time.time() + delay
    members = [part for p, t in pairs for part in (due, f"{p}:{t}")]
    flag_ttl = int(delay) + cache_keys.DRAIN_FLAG_TTL
    replies = hot_pipeline(
        redis_client(),
        [
            ("ZADD", _key(cache_keys.PENDING_REFRESHES), "NX", *members),
            ("SET", _key(cache_keys.DRAIN_SCHEDULED), 1, "NX", "EX", flag_ttl),
        ],
    )
    return bool(replies[-1])


def pending_pop(*, limit: int = 500) -> dict[int, list[str]]:
    """Take (atomically: two drains never get the same entry) up to `limit` due refreshes."""
    client = _client()
    items = client.eval(_POP, 1, _key(cache_keys.PENDING_REFRESHES), time.time(), limit)
    by_profile: dict[int, list[str]] = {}
    for item in items:
        profile_id, _, event_type = (item.decode() if isinstance(item, bytes) else item).partition(":")
        by_profile.setdefault(int(profile_id), []).append(event_type)
    return by_profile


def pending_next_due() -> float | None:
    """When the earliest waiting refresh is due (epoch seconds), or None when none waits."""
    first = _client().zrange(_key(cache_keys.PENDING_REFRESHES), 0, 0, withscores=True)
    return first[0][1] if first else None


def pending_peek() -> list[str]:
    """Every waiting "profile:event type" (for tests and the admin)."""
    return sorted(m.decode() for m in _client().zrange(_key(cache_keys.PENDING_REFRESHES), 0, -1))


def drain_claim(*, delay: float) -> bool:
    return bool(_client().set(_key(cache_keys.DRAIN_SCHEDULED), 1, nx=True, ex=int(delay) + cache_keys.DRAIN_FLAG_TTL))


def drain_release() -> None:
    _client().delete(_key(cache_keys.DRAIN_SCHEDULED))


def pending_claim(pairs: list[tuple[int, str]]) -> list[bool]:
    """Fallback without Redis: a cache mark per (profile, event type); True where it was free."""
    return [cache.add(cache_keys.refresh_pending(p, t), 1, cache_keys.REFRESH_PENDING_TTL) for p, t in pairs]


def pending_release(profile_id: int, event_types: list[str]) -> None:
    """Fallback without Redis: drop the marks as the refresh starts, so later events queue another."""
    cache.delete_many([cache_keys.refresh_pending(profile_id, t) for t in event_types])

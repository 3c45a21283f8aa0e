"""The serving path's cache: key builders and TTLs of what serving caches itself (trending lists),
and reads/writes that survive a cache outage.

Serving must answer when Redis is down (slower, from the model in memory and the database), so
every cache call on the read path goes through `safe_get` / `safe_set`, which log and carry on.
The precomputed lists and the live pointer are keyed in `recommenders/cache_keys.py`; the keys
below follow the same scheme (`rec:v<layout>:...`) and would move there with its owner's consent.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any

from django.core.cache import cache

from recommenders import cache_keys

logger = logging.getLogger(__name__)

# A trending slice (segment x device x country x hour band) is recomputed at most this often.
TRENDING_TTL = 5 * 60
# ... and kept in the process this long, sparing the cache round trip on the hottest path.
TRENDING_LOCAL_TTL = 30.0


def _cache_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        from django_redis.exceptions import ConnectionInterrupted

        errors.append(ConnectionInterrupted)
    except ImportError:  # pragma: no cover - django-redis is a dependency
        pass
    try:
        from redis.exceptions import RedisError

        errors.append(RedisError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


CACHE_ERRORS = _cache_errors()


def trending(slice_key: str) -> str:
    """Trending list of one slice, e.g. `seg=vip|dev=mobile|cc=FR|hb=evening` (`*` for any)."""
    return f"rec:v{cache_keys.VERSION}:trending:{slice_key}"


def safe_get(key: str) -> Any:
    """`cache.get`, or None when the cache cannot be reached."""
    try:
        return cache.get(key)
    except CACHE_ERRORS:
        logger.warning("cache unreachable reading %s; serving without it", key)
        return None


def safe_set(key: str, value: Any, ttl: int | None) -> None:
    try:
        cache.set(key, value, ttl)
    except CACHE_ERRORS:
        logger.warning("cache unreachable writing %s; not cached", key)


class LocalMemo:
    """A tiny per-process memo with a TTL (placements, trending slices, visitors): bounded (the
    oldest tenth dropped beyond), thread-safe enough for dict operations. `jitter`: the share of the
    TTL by which each entry's life is shortened at random, so that entries made in the same few
    seconds (a process's first minute) do not all expire, and are read again, at once."""

    def __init__(self, ttl: float, bound: int = 2000, *, jitter: float = 0.0) -> None:
        self.ttl = ttl
        self.bound = bound
        self.jitter = jitter
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def set(self, key: Any, value: Any) -> None:
        data = self._data
        if len(data) >= self.bound and key not in data:
            for old in list(itertools.islice(data, max(self.bound // 10, 1))):
                data.pop(old, None)
        ttl = self.ttl * (1.0 - self.jitter * random.random()) if self.jitter else self.ttl
        data.pop(key, None)  # in the order set: the oldest are dropped first
        data[key] = (time.monotonic() + ttl, value)

    def discard(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

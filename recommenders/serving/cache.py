"""The serving path's cache: key builders and TTLs of what serving caches itself (trending lists),
and reads/writes that survive a cache outage.

Serving must answer when Redis is down (slower, from the model in memory and the database), so
every cache call on the read path goes through `safe_get` / `safe_set`, which log and carry on.
The precomputed lists and the live pointer are keyed in `recommenders/cache_keys.py`; the keys
below follow the same scheme (`rec:v<layout>:...`) and would move there with its owner's consent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
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


def redis_client():
    """The django-redis client behind the default cache (its `get_client`, `encode`, `decode`), or
    None when the cache is not Redis (the embedded mode's local memory)."""
    client = getattr(cache, "client", None)
    return client if client is not None and hasattr(client, "get_client") else None


class _Line(threading.local):
    """A thread's own connection for `hot_command`, with the client and process it belongs to."""

    conn = None
    owner: tuple[int, int] = (0, 0)
    answered = False  # the connection has answered since it was (re)made


_line = _Line()
_shas: dict[str, str] = {}


def _hot_connection(client):
    owner = (id(client), os.getpid())
    conn = _line.conn
    if conn is None or _line.owner != owner:
        pool = client.get_client(write=True).connection_pool  # the primary: stamps are written this way too
        if conn is not None:
            conn.disconnect()
        conn = _line.conn = pool.connection_class(**pool.connection_kwargs)
        _line.owner, _line.answered = owner, False
    return conn


def hot_command(client, *args) -> Any:
    """One command on this thread's own connection to the cache's Redis, and its raw reply (values
    undecoded). The serving hot path's single round trip, without the connection pool's bookkeeping
    per command (a lock, a fork check, a readiness poll: two thirds of the client's CPU per call).
    Errors are the client's (CACHE_ERRORS); a connection that broke after it had worked (Redis
    restarted) is dropped and the command sent once more on a new one."""
    return _hot(client, [args])[0]


def hot_pipeline(client, commands: list[tuple]) -> list:
    """Several commands in one write and one round trip on the thread's own connection, and their
    raw replies; `hot_command`'s errors and retry (so: commands that may run twice, e.g. SET)."""
    return _hot(client, commands) if commands else []


def _hot(client, commands: list[tuple]) -> list:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    conn = _hot_connection(client)
    for attempt in (1, 2):
        try:
            if len(commands) == 1:
                conn.send_command(*commands[0])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            replies = [conn.read_response() for _ in commands]
        except ResponseError:
            if len(commands) > 1:
                conn.disconnect()  # the replies after the error were not read
            raise  # else a whole reply (an error): the connection is fine
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            if attempt == 2 or not _line.answered:
                raise
            _line.answered = False
            continue
        except BaseException:
            conn.disconnect()  # a reply half read would answer the next command
            raise
        _line.answered = True
        return replies
    raise AssertionError("unreachable")  # pragma: no cover


def hot_script(client, source: str, keys: list[str], args: list) -> Any:
    """A Lua script through `hot_command`: by its hash, loaded on first use (or after a flush)."""
    from redis.exceptions import NoScriptError

    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()
    try:
        return hot_command(client, "EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        return hot_command(client, "EVAL", source, len(keys), *keys, *args)


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
    """A tiny per-process memo with a TTL (placements, trending slices): bounded, thread-safe
    enough for dict operations, and emptied wholesale when it grows past its bound."""

    def __init__(self, ttl: float, bound: int = 2000) -> None:
        self.ttl = ttl
        self.bound = bound
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def set(self, key: Any, value: Any) -> None:
        if len(self._data) >= self.bound:
            self._data.clear()
        self._data[key] = (time.monotonic() + self.ttl, value)

    def discard(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

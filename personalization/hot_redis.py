"""Redis for the request path: the django-redis client behind the default cache, and each thread's
own connection to it for the few commands a request makes (a cached recommendation's one round
trip, the change stamp an event request writes, the real-time segment queue).

Through the cache API or the client's pool, a command pays a pool lock, a fork check and a readiness
poll (two thirds of the client's CPU per call, ~0.1 ms). A thread here keeps one connection of its
own, made with the pool's settings, to the primary. Commands sent this way must be safe to send
twice: a connection that broke after it had worked (Redis restarted) is made again and the
command sent once more. Errors are redis-py's (RedisError, OSError).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import random
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)


class _Backend(threading.local):
    handles = None  # the cache handler's per-thread store the backend came from
    backend = None


_backend = _Backend()


def cache_backend():
    """This thread's default cache backend, what `django.core.cache.cache` stands for, without the
    proxy's look-up on every access (an asgiref `Local`: ~2 µs, and a cached answer made half a
    dozen). Looked up again when the cache settings change (Django then replaces that store)."""
    from django.core.cache import caches

    handles = caches._connections
    if _backend.handles is not handles:
        _backend.backend, _backend.handles = caches["default"], handles
    return _backend.backend


def redis_client():
    """The django-redis client behind the default cache (its `get_client`, `encode`, `decode`), or
    None when the cache is not Redis (the embedded mode's local memory)."""
    client = getattr(cache_backend(), "client", None)
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
    undecoded, as `client.decode` reads them)."""
    return _hot(client, [args])[0]


def hot_pipeline(client, commands: list[tuple]) -> list:
    """Several commands in one write and one round trip on the thread's own connection, and their
    raw replies. An error reply raises (and drops the connection: the replies after it are unread)."""
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


# ---- near cache: values kept in the process while Redis says they have not changed -----------------
# Redis's server-assisted client-side caching (CLIENT TRACKING, Redis 6+), in broadcasting mode: each
# process keeps one connection of its own that asks Redis for the names of every key written under
# the near cache's prefixes (`CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX ...`, subscribed to
# `__redis__:invalidate`), whoever writes them, deletes them or lets them expire, and for database
# flushes. Before answering from memory, a request reads whatever invalidations have arrived (a
# non-blocking read of that socket). Redis writes an invalidation in the same pass as its reply to
# the writer (another socket write, microseconds later), so it is there before any request that
# write caused can come in over HTTP; and a process forgets the keys it writes itself at once
# (`near_forget`).
# Only that one connection matters: when it breaks or goes silent (it is pinged when idle), the near
# cache is emptied and every read goes to Redis until it is back. Entries also age out
# (`RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS`), bounding what a connection that died without a sign
# could leave behind: each after a random share of it between half and all, so that what a busy
# process read in the same few seconds (all of it, after a restart) is not read again all at once,
# a wave of round trips every period. Without Redis, or with the setting at 0, every read goes to
# Redis.
# Every process is told of every write under the prefixes (Redis gathers a pass's keys into one
# message): the price of not tracking each read key by key, which a hot connection breaking would
# silently end.

_NEAR_BOUND = 50_000  # entries; the oldest tenth is dropped beyond
_NEAR_RECENT_BOUND = 20_000  # invalidated keys remembered, so a read racing one is not kept
_NEAR_IDLE_PING = 10.0  # seconds without a word from Redis on the invalidation connection: ping it
_NEAR_PING_TIMEOUT = 5.0  # ... and no answer this long after: it is broken
_NEAR_RETRY = 1.0  # seconds before trying to (re)connect it, doubled after each failed attempt ...
_NEAR_RETRY_MAX = 60.0  # ... up to this
_MISSING = object()


class _Near:
    """A process's near cache for keys under some prefixes, and the connection its invalidations
    arrive on."""

    def __init__(self, client, prefixes: tuple[str, ...], ttl: float) -> None:
        self.client, self.prefixes, self.ttl = client, prefixes, ttl
        self.lock = threading.Lock()
        self.values: dict[str, tuple[Any, float]] = {}
        self.conn = self.sock = self.reader = None
        self.buffer = bytearray(65536)
        self.client_id = 0
        self.seq = 0  # bumped by every invalidation: what a read started before may not keep
        self.recent: dict[str, int] = {}  # key -> seq of its last invalidation
        self.forgotten = 0  # seq before which `recent` was emptied (or everything invalidated)
        self.retry_at = 0.0
        self.failures = 0  # connection attempts failed in a row
        self.heard_at = 0.0
        self.ping_at: float | None = None

    def _connect(self) -> None:
        import hiredis

        pool = self.client.get_client(write=True).connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()
        conn.send_command("CLIENT", "ID")
        client_id = int(conn.read_response())
        tracking = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
        for prefix in self.prefixes:
            tracking += ["PREFIX", prefix]
        conn.send_command(*tracking)
        conn.read_response()
        conn.send_command("SUBSCRIBE", "__redis__:invalidate")
        sock = conn._sock  # raw from here on: redis-py's parser hands pub/sub messages elsewhere
        reader = hiredis.Reader()
        sock.settimeout(5.0)
        while reader.gets() is False:  # the subscription's confirmation
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("invalidation connection closed")
            reader.feed(data)
        sock.setblocking(False)
        self.conn, self.sock, self.reader, self.client_id = conn, sock, reader, client_id
        self._invalidate_all()  # whatever changed while there was no connection
        self.heard_at, self.ping_at = time.monotonic(), None

    def _invalidate_all(self) -> None:
        self.seq += 1
        self.values.clear()
        self.recent.clear()
        self.forgotten = self.seq

    def broken(self, *, connecting: bool = False) -> None:
        """The invalidation connection is gone (or could not be made): forget everything, and try
        again after a while, waiting twice as long after each failed attempt (up to a minute: a
        Redis that refuses tracking, an older one or a proxy, is asked once a minute)."""
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.disconnect()
        self.conn = self.sock = self.reader = None
        self._invalidate_all()
        self.failures = self.failures + 1 if connecting else 0
        if self.failures == 1:
            logger.warning("near cache off: its invalidation connection to Redis could not be made", exc_info=True)
        self.retry_at = time.monotonic() + min(_NEAR_RETRY * 2 ** max(self.failures - 1, 0), _NEAR_RETRY_MAX)

    def drain(self) -> bool:
        """Apply the invalidations that have arrived (under `lock`); False when the near cache
        cannot be trusted now (no invalidation connection): read Redis instead."""
        now = time.monotonic()
        if self.conn is None:
            if now < self.retry_at:
                return False
            try:
                self._connect()
            except Exception:
                self.broken(connecting=True)
                return False
            self.failures = 0
        try:
            while True:
                try:
                    size = self.sock.recv_into(self.buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:  # ssl's "want read" is an OSError too
                    if type(error).__name__ == "SSLWantReadError":
                        break
                    raise
                if not size:
                    raise ConnectionError("invalidation connection closed")
                self.reader.feed(self.buffer, 0, size)
                self.heard_at, self.ping_at = now, None
            while (message := self.reader.gets()) is not False:
                self._apply(message)
            if self.ping_at is not None and now - self.ping_at > _NEAR_PING_TIMEOUT:
                raise ConnectionError("invalidation connection silent")
            if self.ping_at is None and now - self.heard_at > _NEAR_IDLE_PING:
                self.sock.send(b"*1\r\n$4\r\nPING\r\n")
                self.ping_at = now
        except Exception:
            self.broken()
            return False
        return True

    def _apply(self, message) -> None:
        # RESP2 pub/sub: ["message", "__redis__:invalidate", keys]; keys None: a flush. (A ping's
        # answer is ["pong", ""].)
        if not isinstance(message, list) or len(message) < 2 or message[0] not in (b"message", b"invalidate"):
            return
        keys = message[-1]
        if not isinstance(keys, list):
            self._invalidate_all()
            return
        self.invalidate([key.decode() if isinstance(key, bytes) else str(key) for key in keys])

    def invalidate(self, keys: list[str]) -> None:
        """These keys changed: drop them, and remember it so a read racing the change is not kept."""
        self.seq += 1
        if len(self.recent) + len(keys) > _NEAR_RECENT_BOUND:
            self.recent.clear()
            self.forgotten = self.seq
        for key in keys:
            self.values.pop(key, None)
            self.recent[key] = self.seq

    def keep(self, keys: list[str], values: list, since: int) -> None:
        """Keep values read by a request that started at `since` (a seq), unless an invalidation
        of one of them has been applied meanwhile."""
        if self.forgotten > since or any(self.recent.get(key, 0) > since for key in keys):
            return
        if len(self.values) + len(keys) > _NEAR_BOUND:
            for key in list(itertools.islice(self.values, _NEAR_BOUND // 10)):
                del self.values[key]
        expires = time.monotonic() + self.ttl * (1.0 - 0.5 * random.random())  # read together, kept together
        for key, value in zip(keys, values, strict=True):
            self.values.pop(key, None)  # in the order kept: the oldest are dropped first
            self.values[key] = (value, expires)


_near_state: dict[tuple[tuple, int, tuple[str, ...]], _Near] = {}


def _near(client, prefixes: tuple[str, ...]) -> _Near | None:
    from django.conf import settings

    ttl = float(getattr(settings, "RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS", 0) or 0)
    if ttl <= 0:
        return None
    # One per process and Redis server, whichever thread asks: each thread has its own cache client.
    kwargs = client.get_client(write=True).connection_pool.connection_kwargs
    server = (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db"), kwargs.get("username"))
    owner = (server, os.getpid(), prefixes)
    state = _near_state.get(owner)
    if state is None:
        state = _near_state.setdefault(owner, _Near(client, prefixes, ttl))
    state.ttl = ttl
    return state


def near_mget(client, keys: list[str], *, prefixes: tuple[str, ...], decode=None) -> list:
    """MGET of these (full) keys, each under one of `prefixes` (full key prefixes, the same ones on
    every call): from the process's near cache when it holds them all, else from Redis over the
    thread's hot connection, and kept until Redis says one of them changed. The values come back
    raw, or as `decode(key, raw value)` gives them (what is kept, so it is decoded once). A process
    keeps thousands: `decode` should make plain tuples of strings, bytes and numbers, which the
    cyclic garbage collector untracks, rather than instances, which every full collection walks
    (a pause of the whole process that grows with them)."""
    state = _near(client, prefixes) if all(key.startswith(prefixes) for key in keys) else None
    mark = None
    if state is not None:
        with state.lock:
            if state.drain():
                now = time.monotonic()
                found = [state.values.get(key, (_MISSING, 0.0)) for key in keys]
                if all(value is not _MISSING and expires > now for value, expires in found):
                    return [value for value, _ in found]
                mark = (state, state.seq)
    values = hot_command(client, "MGET", *keys)
    if decode is not None:
        values = [decode(key, value) for key, value in zip(keys, values, strict=True)]
    near_keep(mark, keys, values)
    return values


def near_since(client, prefixes: tuple[str, ...]):
    """A mark to take before reading keys under `prefixes` some other way (a script): `near_keep`
    with it keeps what was read unless Redis has said since that it changed. None when the near
    cache is off or cannot be trusted now."""
    state = _near(client, prefixes)
    if state is None:
        return None
    with state.lock:
        return (state, state.seq) if state.drain() else None


def near_keep(mark, keys: list[str], values: list) -> None:
    """Keep values of (full) keys read after `mark` (`near_since`) in the near cache, unless an
    invalidation of one of them has arrived meanwhile."""
    if mark is None:
        return
    state, since = mark
    if not all(key.startswith(state.prefixes) for key in keys):
        return
    with state.lock:
        if state.drain():
            state.keep(keys, values, since)


def near_forget(keys: list[str] | None = None) -> None:
    """Drop these (full) keys from this process's near caches, every key when None: a process
    writing a key forgets it at once, without waiting for Redis's invalidation."""
    for (_, pid, _), state in list(_near_state.items()):
        if pid != os.getpid():
            continue
        with state.lock:
            if keys is None:
                state._invalidate_all()
            else:
                state.invalidate(keys)

"""The log of served lists (`RecommendationServed`) without a database write per page view.

Every list served gets a row: its token comes back on impression and click events, and the health
check joins them to measure CTR per model version and placement. Writing that row inside the request
was the most expensive part of a cached answer (a Postgres INSERT, WAL and all, per page view), so
with Redis the request appends the row to a Redis list (one RPUSH) and `served_flush` moves the
buffered rows to the database in bulk. The request does not even wait for that RPUSH: it appends
the row to this process's own buffer (a list append), and a pusher thread sends what gathered to
Redis in one RPUSH every `RECOMMENDERS_SERVED_PUSH_SECONDS` (0.1 s; at a few hundred page views a
second per process, one round trip carries dozens of rows instead of one each):

- from the request, when the buffer reaches `RECOMMENDERS_SERVED_FLUSH_SIZE` rows, or when this
  process has not asked for a flush for `RECOMMENDERS_SERVED_FLUSH_SECONDS` (the Celery task
  `recommenders.served_flush` is queued; at most about once a second per process);
- and on the beat schedule every few seconds, so a quiet site's last rows do not wait for traffic;
- should no worker take the task, a request finding BACKLOG_FACTOR flush sizes waiting writes a
  batch itself, so the buffer stays bounded.

Nothing CTR attribution needs is lost on the way:
- a flush takes a batch out of the buffer atomically into an "in flight" list (a Lua script), writes
  it in one statement (`ON CONFLICT (token) DO NOTHING`: the token is unique, so writing a batch
  twice is harmless), then drops the in-flight list. When the write fails the batch goes back
  to the buffer at once; when the flushing process dies, a later flush puts in-flight lists older
  than `STALE_SECONDS` back;
- when Redis cannot be reached on the request path (or the cache is not Redis: the embedded mode),
  the row is written synchronously as before (`served_write_now`), so an outage costs speed, not
  rows;
- a row whose profile is gone by the time it is flushed (erased or merged away in the seconds
  between) is stored without the profile: CTR attribution needs the token, version and placement,
  and an erased visitor's rows must not reappear with their profile; a model version deleted
  meanwhile is likewise left empty.

The rows are buffered with the served time of the request, so `served_at` is exact whatever the
flush delay. They wait in Redis for seconds: Redis losing its data in that window (a restart without
persistence) loses them, the same kind of bound the synchronous INSERT with `synchronous_commit off`
had for a Postgres crash. The process's own buffer holds at most a push interval of rows: it is
pushed when the process exits normally (gunicorn's `worker_exit` hook and `atexit`), so only a
process killed outright (SIGKILL, a crash) loses its last tenth of a second; when Redis cannot be
reached the pusher writes the rows to the database itself.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction

from personalization.hot_redis import redis_client
from recommenders import cache_keys
from recommenders.models import ModelVersion, RecommendationServed
from recommenders.serving.cache import CACHE_ERRORS
from tracking.models import Profile

logger = logging.getLogger(__name__)

# An in-flight batch older than this belonged to a flush that died: it goes back to the buffer.
STALE_SECONDS = 300
# Rows per database statement (and per batch taken from the buffer).
FLUSH_BATCH = 1000

# Move up to ARGV[1] rows from the head of the buffer to an in-flight list, atomically.
_TAKE = """
local rows = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #rows == 0 then return rows end
redis.call('LTRIM', KEYS[1], #rows, -1)
redis.call('RPUSH', KEYS[2], unpack(rows))
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
return rows
"""
# Put an in-flight list back at the head of the buffer (the write failed or its flusher died).
_RESTORE = """
local rows = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #rows, 1, -1 do redis.call('LPUSH', KEYS[1], rows[i]) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], KEYS[2])
return #rows
"""


@dataclass(slots=True)
class ServedRow:
    """A served list to log: what `RecommendationServed` stores, without building a model instance
    on the hot path (`model()` builds one where the ORM writes it)."""

    profile_id: int | None
    placement: str
    model_version_id: int | None
    algorithm: str
    items: list[str]
    variant: str = ""
    token: uuid.UUID = field(default_factory=uuid.uuid4)
    served_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def model(self) -> RecommendationServed:
        return RecommendationServed(
            token=self.token,
            profile_id=self.profile_id,
            placement=self.placement,
            model_version_id=self.model_version_id,
            algorithm=self.algorithm,
            items=self.items,
            variant=self.variant,
            served_at=self.served_at,
        )


def _keys() -> tuple[str, str]:
    base = f"rec:v{cache_keys.VERSION}:served"
    return cache.make_key(f"{base}:buffer"), cache.make_key(f"{base}:inflight")


def _client():
    """The raw Redis client behind the default cache, or None when the cache is not Redis."""
    inner = redis_client()
    return inner.get_client(write=True) if inner is not None else None


def _encode(row: ServedRow | RecommendationServed) -> str:
    return json.dumps(
        [
            row.token.hex,
            row.profile_id,
            row.placement,
            row.model_version_id,
            row.algorithm,
            row.items,
            row.variant,
            row.served_at.timestamp(),
        ],
        separators=(",", ":"),
    )


def _decode(raw: bytes | str) -> RecommendationServed:
    token, profile_id, placement, version_id, algorithm, items, variant, at = json.loads(raw)
    return RecommendationServed(
        token=uuid.UUID(token),
        profile_id=profile_id,
        placement=placement,
        model_version_id=version_id,
        algorithm=algorithm,
        items=items,
        variant=variant,
        served_at=datetime.fromtimestamp(at, tz=UTC),
    )


_last_flush_asked = 0.0


def served_record(*, row: ServedRow | RecommendationServed) -> None:
    """Log a served list: into this process's buffer, pushed to Redis by the pusher thread, when
    the cache is Redis; else written now."""
    if not settings.RECOMMENDERS_SERVED_BUFFER or _client() is None:
        served_write_now(row=row)
        return
    if settings.RECOMMENDERS_SERVED_PUSH_SECONDS > 0:
        _local.append(row)
    else:  # no pusher: one RPUSH per list served
        _local.append(row, start=False)
        _local.push()


class _LocalBuffer:
    """Rows served by this process not yet in Redis, and the daemon thread that pushes them there.
    The thread starts with the first row of a process (so a forked worker starts its own). Rows
    wait encoded (strings, which the cyclic garbage collector does not track: a row object per
    answer living a push interval was promoted to the oldest generation and walked by every full
    collection)."""

    def __init__(self) -> None:
        self._rows: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0
        self._thread: threading.Thread | None = None

    def append(self, row: ServedRow | RecommendationServed, *, start: bool = True) -> None:
        encoded = _encode(row)
        with self._lock:
            self._rows.append(encoded)
            started = self._pid == os.getpid() and self._thread is not None
        if start and not started:
            self._start()

    def clear(self) -> None:
        with self._lock:
            self._rows = []

    def __len__(self) -> int:
        return len(self._rows)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="served-list pusher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            interval = max(settings.RECOMMENDERS_SERVED_PUSH_SECONDS, 0.01)
            # Waits of at most a second: a changed interval applies within one.
            woken = self._wake.wait(min(interval, 1.0))
            if not woken and time.monotonic() - last < interval:
                continue
            self._wake.clear()
            last = time.monotonic()
            try:
                self.push()
            except Exception:  # never let the thread die: the next round tries again
                logger.exception("pushing served lists to the buffer failed")

    def push(self) -> int:
        """Send this process's rows to the Redis buffer in one RPUSH (written to the database
        when Redis cannot be reached); returns how many."""
        with self._lock:
            encoded, self._rows = self._rows, []
        if not encoded:
            return 0
        client = _client()
        try:
            if client is None:
                raise ConnectionError("the cache is not Redis")
            length = client.rpush(_keys()[0], *encoded)
        except CACHE_ERRORS:
            logger.warning("cache unreachable: %s served lists written to the database directly", len(encoded))
            self._store_or_keep(encoded)
            return len(encoded)
        _flush_when_due(length)
        return len(encoded)

    def _store_or_keep(self, encoded: list[str]) -> None:
        """Neither Redis nor (maybe) the database: the rows wait for the next round, in front."""
        try:
            _store(encoded)
        except Exception:
            with self._lock:
                self._rows[:0] = encoded
            raise
        finally:
            if threading.current_thread() is self._thread:
                connection.close()  # the pusher's own connection: not kept between rounds


_local = _LocalBuffer()


def served_push() -> int:
    """Push this process's buffered rows to Redis now (process exit, `served_flush`, tests)."""
    return _local.push()


def served_local_clear() -> None:
    """Drop this process's rows not pushed yet (tests start clean)."""
    _local.clear()


@atexit.register
def _push_at_exit() -> None:
    try:
        served_push()
    except Exception:  # interpreter shutdown: nothing else to do with them
        logger.exception("served lists of this process could not be pushed at exit")


# Buffered rows (in flush sizes) beyond which a request writes a batch itself: no worker is taking
# the task (none running, or one that does not know it), and the buffer must not grow without bound.
BACKLOG_FACTOR = 20


def _flush_when_due(length: int) -> None:
    global _last_flush_asked
    size = settings.RECOMMENDERS_SERVED_FLUSH_SIZE
    if length >= size * BACKLOG_FACTOR:
        logger.warning("served-list buffer holds %s rows: no worker flushes it; writing a batch now", length)
        try:
            served_flush(max_rows=FLUSH_BATCH)
        except Exception:  # the rows went back to the buffer; the page is served regardless
            logger.exception("writing a batch of served lists failed")
        return
    now = time.monotonic()
    since = now - _last_flush_asked
    if (length >= size and since >= 1.0) or (since >= settings.RECOMMENDERS_SERVED_FLUSH_SECONDS):
        _last_flush_asked = now
        try:
            served_flush_task.delay()
        except Exception:  # the broker is the same Redis: the beat's flush or the next request's will do
            logger.warning("could not queue recommenders.served_flush; the rows stay buffered", exc_info=True)


def served_write_now(*, row: ServedRow | RecommendationServed) -> None:
    """Write one served list synchronously. On Postgres, outside a transaction, without waiting
    for the WAL flush (`synchronous_commit off` for this one statement, in one round trip): it is
    a log of what was shown, and a crash of the database server in the next fraction of a second
    costs at most the last rows, never consistency."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        (row.model() if isinstance(row, ServedRow) else row).save(force_insert=True)
        return
    table = RecommendationServed._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SET LOCAL synchronous_commit TO OFF; "
            f"INSERT INTO {table} (token, profile_id, placement, model_version_id, algorithm, items, variant, "
            "served_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                row.token,
                row.profile_id,
                row.placement,
                row.model_version_id,
                row.algorithm,
                json.dumps(row.items),
                row.variant,
                row.served_at,
            ],
        )


def _store(raw: list[bytes]) -> None:
    """Write a batch of buffered rows in one statement, dropping references to profiles and versions
    that are gone. On Postgres the buffered JSON goes to the server as it is (`jsonb_array_elements`):
    no model instance per row, so a flush costs the worker about a tenth of what `bulk_create` did."""
    if connection.vendor != "postgresql":
        _store_orm([_decode(r) for r in raw])
        return
    table = RecommendationServed._meta.db_table
    sql = (
        f"INSERT INTO {table} (token, profile_id, placement, model_version_id, algorithm, items, variant, served_at) "
        "SELECT (e->>0)::uuid, p.id, e->>2, v.id, e->>4, e->5, e->>6, to_timestamp((e->>7)::double precision) "
        "FROM jsonb_array_elements(%s::jsonb) AS e "
        f"LEFT JOIN {Profile._meta.db_table} p ON p.id = (e->>1)::bigint "
        f"LEFT JOIN {ModelVersion._meta.db_table} v ON v.id = (e->>3)::bigint "
        "ON CONFLICT (token) DO NOTHING"
    )
    batch = "[" + ",".join(r.decode() if isinstance(r, bytes) else r for r in raw) + "]"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [batch])


def _store_orm(rows: list[RecommendationServed]) -> None:
    profile_ids = {r.profile_id for r in rows if r.profile_id is not None}
    version_ids = {r.model_version_id for r in rows if r.model_version_id is not None}
    with transaction.atomic():
        profiles = set(Profile.objects.filter(pk__in=profile_ids).values_list("pk", flat=True))
        versions = set(ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", flat=True))
        for row in rows:
            if row.profile_id is not None and row.profile_id not in profiles:
                row.profile_id = None
            if row.model_version_id is not None and row.model_version_id not in versions:
                row.model_version_id = None
        RecommendationServed.objects.bulk_create(rows, batch_size=FLUSH_BATCH, ignore_conflicts=True)


def served_flush(*, max_rows: int | None = None) -> int:
    """Move buffered served lists to the database, batch by batch, until the buffer is empty (or
    `max_rows` are written); returns how many rows were taken. Safe to run concurrently. This
    process's own rows go to the buffer first."""
    client = _client()
    if client is None:
        return 0
    served_push()
    buffer, inflight_base = _keys()
    index = f"{inflight_base}:index"
    take, restore = client.register_script(_TAKE), client.register_script(_RESTORE)
    for stale in client.zrangebyscore(index, "-inf", time.time() - STALE_SECONDS):
        restored = restore(keys=[buffer, stale, index])
        logger.warning("served lists: %s rows of a dead flush put back in the buffer", restored)
    written = 0
    while max_rows is None or written < max_rows:
        inflight = f"{inflight_base}:{uuid.uuid4().hex}"
        raw = take(keys=[buffer, inflight, index], args=[FLUSH_BATCH, time.time()])
        if not raw:
            break
        try:
            _store(raw)
        except BaseException:
            restore(keys=[buffer, inflight, index])
            raise
        client.delete(inflight)
        client.zrem(index, inflight)
        written += len(raw)
    return written


def served_pending() -> int:
    """Rows waiting in the buffer and in this process's (0 when the cache is not Redis)."""
    client = _client()
    return int(client.llen(_keys()[0])) + len(_local) if client is not None else 0


@shared_task(
    name="recommenders.served_flush",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def served_flush_task() -> int:
    """Beat (every few seconds) and requests when the buffer is full: buffered served lists to the
    database. Idempotent: tokens are unique and a failed batch goes back to the buffer."""
    return served_flush()

"""The log of served lists (`RecommendationServed`) without a database write per page view.

Every list served gets a row: its token comes back on impression and click events, and the health
check joins them to measure CTR per model version and placement. Writing that row inside the request
was the most expensive part of a cached answer (a Postgres INSERT, WAL and all, per page view), so
with Redis the request appends the row to a Redis list (one RPUSH) and `served_flush` moves the
buffered rows to the database in bulk:

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
had for a Postgres crash.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction

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


def _keys() -> tuple[str, str]:
    base = f"rec:v{cache_keys.VERSION}:served"
    return cache.make_key(f"{base}:buffer"), cache.make_key(f"{base}:inflight")


def _client():
    """The raw Redis client behind the default cache, or None when the cache is not Redis."""
    inner = getattr(cache, "client", None)
    if inner is None or not hasattr(inner, "get_client"):
        return None
    return inner.get_client(write=True)


def _encode(row: RecommendationServed) -> str:
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


def served_record(*, row: RecommendationServed) -> None:
    """Log a served list: buffered in Redis when the cache is Redis, else (or when Redis cannot be
    reached) written now."""
    client = _client() if settings.RECOMMENDERS_SERVED_BUFFER else None
    if client is None:
        served_write_now(row=row)
        return
    try:
        length = client.rpush(_keys()[0], _encode(row))
    except CACHE_ERRORS:
        logger.warning("cache unreachable: served list %s written synchronously", row.token)
        served_write_now(row=row)
        return
    _flush_when_due(length)


# Buffered rows (in flush sizes) beyond which a request writes a batch itself: no worker is taking
# the task (none running, or one that does not know it), and the buffer must not grow without bound.
BACKLOG_FACTOR = 20


def _flush_when_due(length: int) -> None:
    global _last_flush_asked
    size = settings.RECOMMENDERS_SERVED_FLUSH_SIZE
    if length >= size * BACKLOG_FACTOR and length % size == 0:
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


def served_write_now(*, row: RecommendationServed) -> None:
    """Write one served list synchronously. On Postgres, outside a transaction, without waiting
    for the WAL flush (`synchronous_commit off` for this one statement, in one round trip): it is
    a log of what was shown, and a crash of the database server in the next fraction of a second
    costs at most the last rows, never consistency."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        row.save(force_insert=True)
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
    `max_rows` are written); returns how many rows were taken. Safe to run concurrently."""
    client = _client()
    if client is None:
        return 0
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
    """Rows waiting in the buffer (0 when the cache is not Redis)."""
    client = _client()
    return int(client.llen(_keys()[0])) if client is not None else 0


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

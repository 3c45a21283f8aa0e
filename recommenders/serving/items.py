"""Catalogue rows in a web process: what serving reads of each candidate (stock, availability, price,
title, categories) comes from a memo, which learns of catalogue writes from a change log in the cache.

Every write to the catalogue (the bulk upsert, a deletion, an admin edit) announces the ids it
changed once it has committed (`items_changed`): a counter goes up and the ids join a sorted set
scored by the counter's new value, trimmed to the newest `LOG_KEEP`. A web process reads the log at
most every RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS, in one round trip, and drops the rows changed
since its last read: all of them when it fell further behind than the log keeps or the counter went
back (the cache was flushed). So a stock change shows within that period, while a row nobody
changed is read from Postgres once per `MEMO_MAX_AGE`, not once per period.

Without the log (the embedded mode's local-memory cache, or Redis unreachable when the process
reads it) rows are kept one period, as a plain TTL. A write whose announcement failed (Redis
unreachable at that moment) shows within `MEMO_MAX_AGE`. New stub items are not announced: a
memo that held their id as unknown learns of them within `MEMO_MAX_AGE` (models only list items
they were trained on, so only a pin or a collection naming an id before the catalogue has it
waits for that).

The log's scripts need a single Redis (their keys are not in one cluster slot), as the visitor
cache's do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from personalization.hot_redis import hot_script, redis_client
from recommenders import cache_keys
from recommenders.models import Item
from recommenders.serving.cache import CACHE_ERRORS

logger = logging.getLogger(__name__)

ITEM_FIELDS = (
    "id",
    "external_id",
    "title",
    "price",
    "categories",
    "tags",
    "in_stock",
    "available_from",
    "available_until",
    "attributes",
    "is_stub",
)
# A row nobody announced a change of is read again after this long (bounds a lost announcement).
MEMO_MAX_AGE = 300.0
MEMO_BOUND = 50_000
# Ids the change log keeps; a process that last read it further back drops its whole memo.
LOG_KEEP = 20_000
# Ids one announcement sends per script call.
ANNOUNCE_CHUNK = 2_000

_MISSING = object()

# KEYS: counter, log, trimmed-through; ARGV: how many ids to keep, then the ids.
_ANNOUNCE = """
local seq = redis.call('INCR', KEYS[1])
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = seq
  args[#args + 1] = ARGV[i]
  if #args >= 1000 then
    redis.call('ZADD', KEYS[2], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[2], unpack(args)) end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if excess > 0 then
  local last = redis.call('ZRANGE', KEYS[2], excess - 1, excess - 1, 'WITHSCORES')
  redis.call('SET', KEYS[3], last[2])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return seq
"""

# KEYS: counter, log, trimmed-through; ARGV: the counter the process last read (-1: none), the most
# ids it takes. Answers {counter} (nothing changed), {counter, 1} (drop everything) or
# {counter, 0, ids}.
_READ = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if seq == seen then return {seq} end
local trimmed = tonumber(redis.call('GET', KEYS[3]) or '0')
if seen < 0 or seen > seq or seen < trimmed then return {seq, 1} end
local most = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. seen, '+inf', 'LIMIT', 0, most + 1)
if #ids > most then return {seq, 1} end
return {seq, 0, ids}
"""


def _log_keys() -> list[str]:
    return [
        cache.make_key(cache_keys.catalogue_counter()),
        cache.make_key(cache_keys.catalogue_changes()),
        cache.make_key(cache_keys.catalogue_trimmed()),
    ]


class _Memo:
    """The process's rows: external id -> (monotonic time read, Item or _MISSING)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[float, object]] = {}
        self.seen = -1  # the log counter last read
        self.generation = 0  # bumped by every drop: rows read across one are not kept
        self.checked_at = float("-inf")
        self.log_ok = False  # the last read of the log answered
        self.sync_lock = threading.Lock()
        self.lock = threading.Lock()

    def drop(self, external_ids: Iterable[str] | None) -> None:
        with self.lock:
            self.generation += 1
            if external_ids is None:
                self.rows.clear()
                return
            rows = self.rows
            for external_id in external_ids:
                rows.pop(external_id, None)

    def keep(self, fetched: dict[str, Item], wanted: list[str], read_at: float, generation: int) -> None:
        with self.lock:
            if generation != self.generation:
                return  # a change was announced while these were read: they may predate it
            rows = self.rows
            if len(rows) + len(wanted) > MEMO_BOUND:
                rows.clear()
            for external_id in wanted:
                rows[external_id] = (read_at, fetched.get(external_id, _MISSING))


_memo = _Memo()


def _sync(now: float, period: float) -> None:
    """Read the change log if the period has passed (one thread at a time; the others go on with
    the memo as it is, at most one period old)."""
    memo = _memo
    if not memo.sync_lock.acquire(blocking=False):
        return
    try:
        if now - memo.checked_at < period:
            return
        memo.checked_at = now
        client = redis_client()
        if client is None:
            memo.log_ok = False
            return
        try:
            answer = hot_script(client, _READ, keys=_log_keys(), args=[memo.seen, LOG_KEEP])
        except CACHE_ERRORS:
            if memo.log_ok:
                logger.warning("cache unreachable reading the catalogue change log: rows kept %.0f s", period)
            memo.log_ok = False
            return
        seq = int(answer[0])
        if len(answer) > 1:
            memo.drop(None if int(answer[1]) else [i.decode() if isinstance(i, bytes) else i for i in answer[2]])
        memo.seen = seq
        memo.log_ok = True
    finally:
        memo.sync_lock.release()


def items_fetch(external_ids) -> dict[str, Item]:
    """Catalogue rows of the candidates, from the process memo, else in one query."""
    period = settings.RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS
    wanted = list(dict.fromkeys(external_ids))
    if period <= 0:
        return {item.external_id: item for item in Item.objects.filter(external_id__in=wanted).only(*ITEM_FIELDS)}
    memo = _memo
    now = time.monotonic()
    if now - memo.checked_at >= period:
        _sync(now, period)
    oldest = now - (MEMO_MAX_AGE if memo.log_ok else period)
    found: dict[str, Item] = {}
    need = []
    rows = memo.rows  # read inline: a page view reads dozens
    for external_id in wanted:
        hit = rows.get(external_id)
        if hit is None or hit[0] < oldest:
            need.append(external_id)
        elif hit[1] is not _MISSING:
            found[external_id] = hit[1]
    if need:
        generation = memo.generation
        fetched = {item.external_id: item for item in Item.objects.filter(external_id__in=need).only(*ITEM_FIELDS)}
        found.update(fetched)
        memo.keep(fetched, need, now, generation)
    return found


def items_changed(external_ids: Iterable[str]) -> None:
    """Announce catalogue rows that changed or went away. Call it once the write has committed
    (`items_changed_on_commit` does): a process reading the log before then would read the old row
    again and keep it."""
    ids = [str(i) for i in dict.fromkeys(external_ids)]
    if not ids:
        return
    _memo.drop(ids)
    client = redis_client()
    if client is None:
        return
    try:
        for start in range(0, len(ids), ANNOUNCE_CHUNK):
            hot_script(client, _ANNOUNCE, keys=_log_keys(), args=[LOG_KEEP, *ids[start : start + ANNOUNCE_CHUNK]])
    except CACHE_ERRORS:
        logger.warning(
            "cache unreachable: a change of %d catalogue items was not announced; web processes show it within %.0f s",
            len(ids),
            MEMO_MAX_AGE,
        )


def items_changed_on_commit(external_ids: Iterable[str]) -> None:
    ids = list(external_ids)
    if ids:
        transaction.on_commit(lambda: items_changed(ids))


def items_forget() -> None:
    """Forget every row and the log position (tests; a process that must reread the catalogue)."""
    _memo.drop(None)
    _memo.seen = -1
    _memo.checked_at = float("-inf")
    _memo.log_ok = False

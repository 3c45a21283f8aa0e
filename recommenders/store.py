"""Precomputed top-N lists in the cache: the one module that reads and writes them.

Publishing writes hundreds of thousands of lists; the cache API would pay a round trip per key,
so with Redis the writes go down one of the raw client's pooled connections in batches (SET .. EX
per list, framed here, one round trip per batch), encoded exactly as django-redis encodes values,
so `cache.get` reads them too. A request's single read or write of a list goes over its thread's
own connection (`personalization.hot_redis`). Without Redis (embedded mode, local memory) the cache
API does the same jobs.

A list is one compact bytes value (read it with `toplist_get` / `toplists_get`, never by hand):
the unix time it was computed, the float32 scores, and the external ids (best first, items the
user already interacted with left out) joined by a separator no id contains. Bytes pickle at
memcpy speed, which matters when a publish writes a hundred thousand of them.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache

from personalization.hot_redis import hot_command, redis_client
from recommenders import cache_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopList:
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    computed_at: float


MAGIC = b"TL1"
SEPARATOR = "\x1f"  # ASCII unit separator: never in an external id (they are trimmed printable text)
_HEAD = struct.Struct("<dI")  # computed at (unix time), number of items


def _encode(item_ids: list[str], scores: np.ndarray, computed_at: float) -> bytes:
    header = _HEAD.pack(computed_at, len(item_ids))
    packed = np.asarray(scores, dtype="<f4").tobytes()
    return MAGIC + header + packed + SEPARATOR.join(item_ids).encode()


def _decode(value) -> TopList | None:
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        return None
    at, n = _HEAD.unpack_from(value, len(MAGIC))
    offset = len(MAGIC) + _HEAD.size
    scores = np.frombuffer(value, dtype="<f4", count=n, offset=offset).tolist()
    text = value[offset + 4 * n :].decode()
    ids = tuple(text.split(SEPARATOR)) if n else ()
    return TopList(ids, tuple(scores), at)


def toplist_names(item_ids: np.ndarray) -> np.ndarray:
    """A model's external ids (column -> id) as the UTF-8 bytes lists are made of, for
    `toplist_values`: encoded once per model rather than once per list."""
    names = np.empty(len(item_ids), dtype=object)
    names[:] = [item.encode() for item in np.asarray(item_ids).tolist()]
    return names


def toplist_values(*, names: np.ndarray, ids: np.ndarray, scores: np.ndarray, computed_at: float) -> list[bytes]:
    """The stored values of a block of lists at once (the bytes `_encode` gives each): row i of
    `ids` (item columns, -1 where there is none) and `scores` is one list; `names` maps a column
    to its external id (`toplist_names`)."""
    ids = np.asarray(ids, dtype=np.int64)
    valid = ids >= 0
    # Each list's items first, in their order (the rest is padding): a stable sort of the flags.
    order = np.argsort(~valid, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    packed = np.take_along_axis(np.asarray(scores, dtype="<f4"), order, axis=1).tobytes()
    counts = valid.sum(axis=1).tolist()
    flat = names[ids[ids >= 0]].tolist()
    separator = SEPARATOR.encode()
    heads: dict[int, bytes] = {}
    width = 4 * ids.shape[1]
    values = []
    start = 0
    for row, n in enumerate(counts):
        head = heads.get(n)
        if head is None:
            head = heads[n] = MAGIC + _HEAD.pack(computed_at, n)
        offset = row * width
        values.append(head + packed[offset : offset + 4 * n] + separator.join(flat[start : start + n]))
        start += n
    return values


def toplists_put(*, config_key: str, version: int, profile_ids: list[int], values: list[bytes]) -> int:
    """Write encoded lists (`toplist_values`) of the profiles under the version's keys, in one round
    trip; returns how many.

    With Redis the SET commands are framed here and sent down one pooled connection, then every
    reply is read: redis-py's pipeline spends more time packing arguments and parsing replies
    than Redis spends storing the values. Values are encoded exactly as django-redis encodes
    them, so `cache.get` reads them."""
    if not profile_ids:
        return 0
    ttl = cache_keys.TOPLIST_TTL
    inner = redis_client()
    if inner is None:
        cache.set_many(
            {cache_keys.toplist(config_key, version, pid): v for pid, v in zip(profile_ids, values, strict=True)}, ttl
        )
        return len(profile_ids)
    expiry = b"" if ttl is None else b"$2\r\nEX\r\n$%d\r\n%b\r\n" % (len(str(ttl)), str(ttl).encode())
    command = (b"*5" if ttl is not None else b"*3") + b"\r\n$3\r\nSET\r\n"
    frames = []
    for profile_id, value in zip(profile_ids, values, strict=True):
        key_bytes = str(cache.make_key(cache_keys.toplist(config_key, version, profile_id))).encode()
        encoded = inner.encode(value)
        frames.append(
            b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (command, len(key_bytes), key_bytes, len(encoded), encoded, expiry)
        )
    pool = inner.get_client(write=True).connection_pool
    try:
        connection = pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        connection = pool.get_connection("SET")
    try:
        connection.send_packed_command([b"".join(frames)])
        for _ in frames:
            connection.read_response()  # raises on an error reply
    except BaseException:
        connection.disconnect()  # unread replies would answer the next user of the connection
        raise
    finally:
        pool.release(connection)
    return len(frames)


def toplist_get(*, config_key: str, version: int, profile_id: int) -> TopList | None:
    """The precomputed list of one profile under one version (None: not precomputed or expired)."""
    key = cache_keys.toplist(config_key, version, profile_id)
    inner = redis_client()
    if inner is None:
        return _decode(cache.get(key))
    raw = hot_command(inner, "GET", cache.make_key(key))  # a request's read: the thread's connection
    return _decode(inner.decode(raw) if raw is not None else None)


def toplists_get(*, config_key: str, version: int, profile_ids: list[int]) -> dict[int, TopList]:
    keys = {cache_keys.toplist(config_key, version, pid): pid for pid in profile_ids}
    found = cache.get_many(list(keys))
    return {keys[key]: decoded for key, value in found.items() if (decoded := _decode(value)) is not None}


def toplist_set(
    *, config_key: str, version: int, profile_id: int, item_ids: list[str], scores, computed_at: float, ttl: int
) -> None:
    """Re-cache one list recomputed on read (the user had events newer than the precompute)."""
    key, value = cache_keys.toplist(config_key, version, profile_id), _encode(item_ids, scores, computed_at)
    inner = redis_client()
    if inner is None:
        cache.set(key, value, ttl)
        return
    hot_command(inner, "SET", cache.make_key(key), inner.encode(value), "EX", ttl)


def toplists_forget_profile(*, profile_id: int) -> None:
    """Erasure: drop the profile's lists under every version that may still be cached."""
    from recommenders.models import ModelVersion

    versions = ModelVersion.objects.exclude(published_at=None).values_list("config__key", "version")
    keys = [cache_keys.toplist(config_key, version, profile_id) for config_key, version in versions]
    if keys:
        cache.delete_many(keys)

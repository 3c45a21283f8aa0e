"""Precomputed top-N lists in the cache: the one module that talks to Redis directly.

Publishing writes hundreds of thousands of lists; the cache API would pay a round trip per key,
so with Redis the writes go through the raw client in pipelines (SET .. EX per list, one round
trip per batch), encoded exactly as django-redis encodes values, so `cache.get` reads them too.
Without Redis (embedded mode, local memory) `cache.set_many` does the same job.

A list is one compact bytes value (read it with `toplist_get` / `toplists_get`, never by hand):
the unix time it was computed, the float32 scores, and the external ids (best first, items the
user already interacted with left out) joined by a separator no id contains. Bytes pickle at
memcpy speed, which matters when a publish writes a hundred thousand of them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache

from recommenders import cache_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopList:
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    computed_at: float


MAGIC = b"TL1"
SEPARATOR = "\x1f"  # ASCII unit separator: never in an external id (they are trimmed printable text)
_HEADER = np.dtype([("at", "<f8"), ("n", "<u4")])


def _encode(item_ids: list[str], scores: np.ndarray, computed_at: float) -> bytes:
    header = np.array([(computed_at, len(item_ids))], dtype=_HEADER).tobytes()
    packed = np.asarray(scores, dtype="<f4").tobytes()
    return MAGIC + header + packed + SEPARATOR.join(item_ids).encode()


def _decode(value) -> TopList | None:
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        return None
    offset = len(MAGIC)
    header = np.frombuffer(value, dtype=_HEADER, count=1, offset=offset)[0]
    n = int(header["n"])
    offset += _HEADER.itemsize
    scores = np.frombuffer(value, dtype="<f4", count=n, offset=offset)
    text = value[offset + 4 * n :].decode()
    ids = tuple(text.split(SEPARATOR)) if n else ()
    return TopList(ids, tuple(float(x) for x in scores), float(header["at"]))


def _raw_client():
    """The django-redis client behind the default cache, or None (not Redis)."""
    inner = getattr(cache, "client", None)
    if inner is None or not hasattr(inner, "get_client") or not hasattr(inner, "encode"):
        return None
    return inner


def toplists_write(
    *, config_key: str, version: int, lists: Iterator[tuple[int, list[str], np.ndarray]], computed_at: float
) -> int:
    """Write `(profile_id, item_ids, scores)` lists under the version's keys; returns how many.

    A writer thread sends full batches while the caller's generator computes the next ones (the
    scoring runs in BLAS / implicit with the GIL released), so the network time mostly hides
    behind the arithmetic. At most two batches wait in memory."""
    batch_size = max(1, settings.RECOMMENDERS_PUBLISH_BATCH)
    ttl = cache_keys.TOPLIST_TTL
    pending: queue.Queue[list[tuple[str, bytes]] | None] = queue.Queue(maxsize=2)
    failures: list[BaseException] = []
    written = 0

    def send(batch: list[tuple[str, bytes]]) -> None:
        inner = _raw_client()
        if inner is not None:
            pipe = inner.get_client(write=True).pipeline(transaction=False)
            for key, value in batch:
                pipe.set(cache.make_key(key), inner.encode(value), ex=ttl)
            pipe.execute()
        else:
            cache.set_many(dict(batch), ttl)

    def writer() -> None:
        while (batch := pending.get()) is not None:
            if not failures:
                try:
                    send(batch)
                except BaseException as exc:  # re-raised in the caller's thread below
                    failures.append(exc)

    thread = threading.Thread(target=writer, name="toplists-writer", daemon=True)
    thread.start()
    batch: list[tuple[str, bytes]] = []
    try:
        for profile_id, item_ids, scores in lists:
            batch.append((cache_keys.toplist(config_key, version, profile_id), _encode(item_ids, scores, computed_at)))
            if len(batch) >= batch_size:
                pending.put(batch)
                written += len(batch)
                batch = []
                if failures:
                    break
        if batch and not failures:
            pending.put(batch)
            written += len(batch)
    finally:
        pending.put(None)
        thread.join()
    if failures:
        raise failures[0]
    return written


def toplist_get(*, config_key: str, version: int, profile_id: int) -> TopList | None:
    """The precomputed list of one profile under one version (None: not precomputed or expired)."""
    return _decode(cache.get(cache_keys.toplist(config_key, version, profile_id)))


def toplists_get(*, config_key: str, version: int, profile_ids: list[int]) -> dict[int, TopList]:
    keys = {cache_keys.toplist(config_key, version, pid): pid for pid in profile_ids}
    found = cache.get_many(list(keys))
    return {keys[key]: decoded for key, value in found.items() if (decoded := _decode(value)) is not None}


def toplist_set(
    *, config_key: str, version: int, profile_id: int, item_ids: list[str], scores, computed_at: float, ttl: int
) -> None:
    """Re-cache one list recomputed on read (the user had events newer than the precompute)."""
    cache.set(cache_keys.toplist(config_key, version, profile_id), _encode(item_ids, scores, computed_at), ttl)


def toplists_forget_profile(*, profile_id: int) -> None:
    """Erasure: drop the profile's lists under every version that may still be cached."""
    from recommenders.models import ModelVersion

    versions = ModelVersion.objects.exclude(published_at=None).values_list("config__key", "version")
    keys = [cache_keys.toplist(config_key, version, profile_id) for config_key, version in versions]
    if keys:
        cache.delete_many(keys)

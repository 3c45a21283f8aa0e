"""Precomputed top-N lists in the cache: the one module that reads and writes them.

Publishing writes hundreds of thousands of lists; the cache API would pay a round trip per key,
so with Redis the writes go down one of the raw client's pooled connections in batches (SET .. EX
per list, framed here, one round trip per batch), encoded exactly as django-redis encodes values,
so `cache.get` reads them too. A request's single read or write of a list goes over its thread's
own connection (`personalization.hot_redis`). Without Redis (embedded mode, local memory) the cache
API does the same jobs.

A list is one compact bytes value (read it with `toplist_get` / `toplists_get`, never by hand):
the unix time it was computed, the float32 scores, each item's reason (which of up to 254 anchors,
the visitor's own items, explains it: "because you viewed X"), each anchor's verb, and the external
ids (best first, items the user already interacted with left out), then the anchors' ids, joined
by a separator no id contains. Bytes pickle at memcpy speed, which matters when a publish writes a
hundred thousand of them. Lists written before reasons were stored (`TL1`) still read, without them.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache

from personalization.hot_redis import hot_command, near_forget, redis_client
from recommenders import cache_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopList:
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    computed_at: float
    # Why each item: its anchor's slot (NO_REASON: none), the anchors' ids and verbs ("viewed",
    # "bought" ...). `slots` None: a list stored without reasons.
    slots: bytes | None = None
    anchors: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()

    def because(self, position: int) -> tuple[str, str]:
        """(anchor id, verb) explaining the item at `position`; ("", "") when nothing does."""
        slot = self.slots[position] if self.slots is not None else NO_REASON
        return ("", "") if slot == NO_REASON else (self.anchors[slot], self.verbs[slot])

    def reasons(self) -> list[tuple[str, str]] | None:
        """`because` of every item, as `_encode` takes them (None: stored without reasons)."""
        return None if self.slots is None else [self.because(i) for i in range(len(self.item_ids))]


MAGIC_V1 = b"TL1"
MAGIC = b"TL2"
SEPARATOR = "\x1f"  # ASCII unit separator: never in an external id (they are trimmed printable text)
_HEAD_V1 = struct.Struct("<dI")  # computed at (unix time), number of items
_HEAD = struct.Struct("<dIB")  # computed at, number of items, number of anchors
NO_REASON = 255
MAX_ANCHORS = 254
# An anchor's verb is stored as its index here ("because you {verb} X"); unknown verbs read as the first.
VERBS = ("viewed", "bought", "added to your cart", "liked")
_VERB_CODES = {verb: code for code, verb in enumerate(VERBS)}


def _encode(
    item_ids: list[str],
    scores: np.ndarray,
    computed_at: float,
    because: list[tuple[str, str]] | None = None,
) -> bytes:
    """`because`: (anchor id, verb) per item, ("", "") for an item nothing explains."""
    anchors: dict[str, int] = {}
    verbs: list[int] = []
    slots = bytearray(len(item_ids))
    for position, (anchor, verb) in enumerate(because or [("", "")] * len(item_ids)):
        slot = anchors.get(anchor) if anchor else NO_REASON
        if slot is None:
            if len(anchors) >= MAX_ANCHORS:
                slot = NO_REASON
            else:
                slot = anchors[anchor] = len(anchors)
                verbs.append(_VERB_CODES.get(verb, 0))
        slots[position] = slot
    header = _HEAD.pack(computed_at, len(item_ids), len(anchors))
    packed = np.asarray(scores, dtype="<f4").tobytes()
    text = SEPARATOR.join([*item_ids, *anchors]).encode()
    return MAGIC + header + packed + bytes(slots) + bytes(verbs) + text


def _decode(value) -> TopList | None:
    fields = toplist_fields(value)
    return None if fields is None else TopList(*fields)


def toplist_fields(value) -> tuple | None:
    """A stored list's fields, in `TopList`'s order, as a plain tuple of strings, numbers and bytes
    (`TopList(*fields)` makes the list): what a process keeps of thousands of lists (the near
    cache), so that the cyclic garbage collector never has to walk them (an exact tuple of such
    values is untracked by it; an instance is not)."""
    if not isinstance(value, bytes):
        return None
    if value.startswith(MAGIC):
        at, n, k = _HEAD.unpack_from(value, len(MAGIC))
        offset = len(MAGIC) + _HEAD.size
        scores = np.frombuffer(value, dtype="<f4", count=n, offset=offset).tolist()
        offset += 4 * n
        slots, codes = value[offset : offset + n], value[offset + n : offset + n + k]
        parts = value[offset + n + k :].decode().split(SEPARATOR) if n + k else []
        verbs = tuple(VERBS[c] if c < len(VERBS) else VERBS[0] for c in codes)
        return (tuple(parts[:n]), tuple(scores), at, slots, tuple(parts[n:]), verbs)
    if value.startswith(MAGIC_V1):
        at, n = _HEAD_V1.unpack_from(value, len(MAGIC_V1))
        offset = len(MAGIC_V1) + _HEAD_V1.size
        scores = np.frombuffer(value, dtype="<f4", count=n, offset=offset).tolist()
        text = value[offset + 4 * n :].decode()
        return (tuple(text.split(SEPARATOR)) if n else (), tuple(scores), at, None, (), ())
    return None


def toplist_names(item_ids: np.ndarray) -> np.ndarray:
    """A model's external ids (column -> id) as the UTF-8 bytes lists are made of, for
    `toplist_values`: encoded once per model rather than once per list."""
    names = np.empty(len(item_ids), dtype=object)
    names[:] = [item.encode() for item in np.asarray(item_ids).tolist()]
    return names


def toplist_values(
    *,
    names: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    computed_at: float,
    anchors: np.ndarray | None = None,
    slots: np.ndarray | None = None,
) -> list[bytes]:
    """The stored values of a block of lists at once (the bytes `_encode` gives each): row i of
    `ids` (item columns, -1 where there is none) and `scores` is one list; `names` maps a column
    to its external id (`toplist_names`). The reasons, all "viewed": `anchors`, each row's anchor
    columns (first, then -1 padding), and `slots`, for each item of `ids` the index of its anchor in
    the row (NO_REASON: none)."""
    ids = np.asarray(ids, dtype=np.int64)
    valid = ids >= 0
    # Each list's items first, in their order (the rest is padding): a stable sort of the flags.
    order = np.argsort(~valid, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    packed = np.take_along_axis(np.asarray(scores, dtype="<f4"), order, axis=1).tobytes()
    counts = valid.sum(axis=1).tolist()
    flat = names[ids[ids >= 0]].tolist()
    if anchors is None or slots is None:
        anchors = np.full((len(ids), 0), -1, dtype=np.int64)
        slots = np.full(ids.shape, NO_REASON, dtype=np.uint8)
    anchors = np.asarray(anchors, dtype=np.int64)
    slot_bytes = np.take_along_axis(np.asarray(slots, dtype=np.uint8), order, axis=1).tobytes()
    anchor_counts = (anchors >= 0).sum(axis=1).tolist()
    anchor_names = names[anchors[anchors >= 0]].tolist()
    separator = SEPARATOR.encode()
    heads: dict[tuple[int, int], bytes] = {}
    width = ids.shape[1]
    values = []
    start = anchor_start = 0
    for row, (n, k) in enumerate(zip(counts, anchor_counts, strict=True)):
        head = heads.get((n, k))
        if head is None:
            head = heads[(n, k)] = MAGIC + _HEAD.pack(computed_at, n, k)
        offset = row * width
        parts = flat[start : start + n] + anchor_names[anchor_start : anchor_start + k]
        values.append(
            head
            + packed[4 * offset : 4 * (offset + n)]
            + slot_bytes[offset : offset + n]
            + bytes(k)  # verb 0: "viewed"
            + separator.join(parts)
        )
        start += n
        anchor_start += k
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
    *,
    config_key: str,
    version: int,
    profile_id: int,
    item_ids: list[str],
    scores,
    computed_at: float,
    ttl: int,
    because: list[tuple[str, str]] | None = None,
) -> None:
    """Re-cache one list recomputed on read (the user had events newer than the precompute), with
    its reasons (`because`: (anchor id, verb) per item) when known."""
    key = cache_keys.toplist(config_key, version, profile_id)
    value = _encode(item_ids, scores, computed_at, because)
    inner = redis_client()
    if inner is None:
        cache.set(key, value, ttl)
        return
    hot_command(inner, "SET", cache.make_key(key), inner.encode(value), "EX", ttl)
    near_forget([cache.make_key(key)])  # other processes hear it from Redis


def toplists_forget_profile(*, profile_id: int) -> None:
    """Erasure: drop the profile's lists under every version that may still be cached."""
    from recommenders.models import ModelVersion

    versions = ModelVersion.objects.exclude(published_at=None).values_list("config__key", "version")
    keys = [cache_keys.toplist(config_key, version, profile_id) for config_key, version in versions]
    if keys:
        cache.delete_many(keys)

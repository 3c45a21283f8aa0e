"""Who is asking for recommendations: the visitor's profile, whether their consent allows
personalization, their context (device, country, hour band) and their recent history, read in a
few indexed queries so the hot path stays in milliseconds."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models.base import ModelState
from django.utils import timezone

from personalization.hot_redis import cache_backend, hot_pipeline, hot_script, near_forget, near_since, redis_client
from privacy.consent import State, collection_allowed
from privacy.services.consent import consent_states, purposes
from recommenders import cache_keys
from recommenders.models import Feedback
from recommenders.services.catalogue import item_ids_in_properties
from recommenders.serving.cache import CACHE_ERRORS, LocalMemo, safe_get, safe_set
from tracking.models import Event, Identity, Profile, Source
from tracking.services.identity import identity_hash, old_identity_hash_keys

logger = logging.getLogger(__name__)

PURPOSE = "personalization"
# A new session starts after this much inactivity (the same gap ingestion counts sessions with).
SESSION_GAP_SECONDS = 30 * 60
HOUR_BANDS = (("night", 0, 5), ("morning", 6, 11), ("afternoon", 12, 17), ("evening", 18, 23))
# Verbs of "because you ... X", by the event type the anchor item came from.
VERBS = {"purchase": "bought", "add_to_cart": "added to your cart", "thumbs_up": "liked"}


def hour_band(hour: int | None) -> str:
    if hour is None:
        return ""
    for name, first, last in HOUR_BANDS:
        if first <= hour <= last:
            return name
    return ""


def band_hours(band: str) -> tuple[int, int] | None:
    for name, first, last in HOUR_BANDS:
        if name == band:
            return first, last
    return None


# Profile fields serving reads; the others stay deferred (loaded only if something asks for them).
# In the model's field order, which is the order `Model.from_db` expects values in.
_WANTED = {"id", "uuid", "last_seen_at", "last_device_type", "last_country", "traits", "last_source_id"}
PROFILE_FIELDS = tuple(f.attname for f in Profile._meta.concrete_fields if f.attname in _WANTED)
_UUID_AT, _TRAITS_AT = PROFILE_FIELDS.index("uuid"), PROFILE_FIELDS.index("traits")


@dataclass(frozen=True)
class Visitor:
    """A profile found by one of its identifiers, with its personalization consent state.
    `read_at`: set when it came from the visitor cache: the time it was read from the database,
    which the profile's change stamp must not be later than (see `visitor_cached`)."""

    profile: Profile
    consent: State | None
    read_at: float | None = None
    kind: str = ""
    values: tuple[str, ...] = ()
    # (toplist key prefix, the list's raw value, the change stamp, the near cache's mark taken before
    # the read or None) read in the same round trip as the visitor (see `visitor_cached`); never kept
    # in the memo.
    prefetched: tuple | None = field(default=None, compare=False, repr=False)


def _lookup(kind: str, values: list[str]) -> Visitor | None:
    """Identity -> profile, and the profile's consent state for personalization. On Postgres one
    raw statement (on the hot path the ORM's query building costs more than the query); elsewhere
    (the embedded SQLite mode) the ORM."""
    purpose = purposes().get(PURPOSE)
    if connection.vendor != "postgresql":
        identity = Identity.objects.select_related("profile").filter(kind=kind, value__in=values).first()
        if identity is None:
            return None
        state = consent_states([identity.profile_id]).get(identity.profile_id, {}).get(PURPOSE)
        return Visitor(identity.profile, state)
    from privacy.models import ConsentState

    marks = ", ".join(["%s"] * len(values))
    columns = ", ".join(f"p.{connection.ops.quote_name(f)}" for f in PROFILE_FIELDS)
    sql = (
        f"SELECT {columns}, cs.granted, cs.policy_version "
        f"FROM {Identity._meta.db_table} i JOIN {Profile._meta.db_table} p ON p.id = i.profile_id "
        f"LEFT JOIN {ConsentState._meta.db_table} cs ON cs.profile_id = p.id AND cs.purpose_id = %s "
        f"WHERE i.kind = %s AND i.value IN ({marks}) LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [purpose.id if purpose else -1, kind, *values])
        row = cursor.fetchone()
    if row is None:
        return None
    fields = list(row[: len(PROFILE_FIELDS)])
    at = PROFILE_FIELDS.index("traits")
    fields[at] = Profile._meta.get_field("traits").from_db_value(fields[at], None, connection)
    profile = Profile.from_db("default", list(PROFILE_FIELDS), fields)
    granted, version = row[len(PROFILE_FIELDS) :]
    return Visitor(profile, None if granted is None else State(bool(granted), int(version)))


def visitor_by_anonymous_id(anonymous_id: str, *, cached: bool = False, toplist_prefix: str = "") -> Visitor | None:
    """`cached`: through the visitor cache (the recommendations hot path, which confirms the entry
    with the same round trip that reads the visitor's list); else from the database."""
    if cached:
        return visitor_cached(Identity.Kind.ANONYMOUS, [anonymous_id], toplist_prefix=toplist_prefix)
    return _lookup(Identity.Kind.ANONYMOUS, [anonymous_id])


def visitor_by_user_id(user_id: str, *, cached: bool = False, toplist_prefix: str = "") -> Visitor | None:
    """By the clear user id: its keyed hash under the current key, then the keys being rotated out
    (an identity is re-hashed only when the user next sends an event)."""
    values = [identity_hash(user_id)] + [identity_hash(user_id, key=key) for key in old_identity_hash_keys()]
    if cached:
        return visitor_cached(Identity.Kind.USER, values, toplist_prefix=toplist_prefix)
    return _lookup(Identity.Kind.USER, values)


# ---- the visitor cache -------------------------------------------------------------------------------
# Resolving the visitor was the one database query of a cached answer. Entries (identity -> the
# profile fields serving reads and the consent state) are kept in this process (VISITOR_LOCAL_TTL, a
# returning visitor's next page views need no round trip for them) and in Redis (VISITOR_TTL).
# Whatever changes them (events stored: last_seen_at and context; consent; a merge; erasure) sets
# the profile's change stamp (`visitors_changed`, from `recommenders.serving.receivers`). An entry
# read from the database before its profile's stamp is stale: the hot path reads the stamp together
# with the visitor's list (one MGET) and goes back to the database when it is, so an entry is never
# trusted without its stamp being checked. When the stamp cannot be read (Redis down) the entry is
# not trusted either. Stamps outlive entries, so no entry outlives the stamp that condemns it.
# VISITOR_SKEW covers clocks of different web hosts being slightly apart: a change stamped up to
# that long before an entry was read also condemns it (it costs one query more).
# Entries live a day (the stamps a minute longer): the stamp, not the age, says when one is stale,
# and `visitors_warm` writes the entries of the visitors whose lists a new version published, so the
# first cached answer after a publish needs no database read either.
VISITOR_TTL = 24 * 3600
# The process's memo is checked against the change stamp on every use like any entry: its life only
# bounds memory (and must stay shorter than a stamp's). Each entry lives between half of it and all
# of it, so that the visitors a process met in the same minute are not all read again together.
VISITOR_LOCAL_TTL = 900.0
VISITOR_SKEW = 0.5
UNREADABLE = object()  # a change stamp that could not be read: trust nothing cached
_local = LocalMemo(ttl=VISITOR_LOCAL_TTL, bound=20_000, jitter=0.5)


def visitor_key(kind: str, value: str) -> str:
    return f"rec:v{cache_keys.VERSION}:visitor:{kind}:{value}"


def visitor_stamp_key_prefix() -> str:
    return f"rec:v{cache_keys.VERSION}:visitor-stamp:"


def visitor_stamp_key(profile_id: int) -> str:
    return f"{visitor_stamp_key_prefix()}{profile_id}"


@functools.cache
def near_prefixes() -> tuple[str, ...]:
    """What the hot path keeps in the process's near cache (`hot_redis.near_mget`): the visitors'
    lists and change stamps (full keys), as long as Redis says they have not changed."""
    make_key = cache_backend().make_key
    return make_key(cache_keys.toplists_prefix()), make_key(visitor_stamp_key_prefix())


def visitors_changed(profile_ids) -> None:
    """Condemn the cached visitor entries of these profiles (their data or identities changed)."""
    now = time.time()
    stamps = {visitor_stamp_key(int(pid)): now for pid in set(profile_ids)}
    if not stamps:
        return
    client = redis_client()
    # With Redis unreachable no stamp can be read either, and unreadable stamps condemn every entry.
    with contextlib.suppress(*CACHE_ERRORS):
        if client is None:
            cache.set_many(stamps, VISITOR_TTL + 60)
            return
        # Every event request stamps its visitor: one write on the thread's own connection (through
        # the cache API's pool this cost ~0.3 ms of CPU per request, as much as the rest of a stamp).
        value, ttl = client.encode(now), VISITOR_TTL + 60
        keys = [cache.make_key(key) for key in stamps]
        hot_pipeline(client, [("SET", key, value, "EX", ttl) for key in keys])
        near_forget(keys)  # other processes hear it from Redis


def visitor_is_current(visitor: Visitor, stamp) -> bool:
    """Is a visitor (and what came with it) still what the database says, given their change stamp
    (None: no change recorded; UNREADABLE: the cache could not be asked)?"""
    if visitor.read_at is None:
        return True
    if stamp is UNREADABLE:
        return False
    return stamp is None or float(stamp) < visitor.read_at - VISITOR_SKEW


def visitor_stamp(profile_id: int):
    try:
        return cache.get(visitor_stamp_key(profile_id))
    except CACHE_ERRORS:
        return UNREADABLE


def _entry(visitor: Visitor, read_at: float) -> tuple:
    profile = visitor.profile
    state = visitor.consent
    return (
        read_at,
        tuple(getattr(profile, f) for f in PROFILE_FIELDS),
        None if state is None else (state.granted, state.policy_version),
    )


def _kept(entry: tuple) -> tuple:
    """An entry as the process keeps it (`_local`): a plain tuple of strings, numbers and datetimes
    (the uuid as its int, the traits as JSON text), which the cyclic garbage collector untracks (a
    tuple holding a dict or an instance, tracked or not, it never does). Kept as visitor and profile
    instances, the memo's tens of thousands of objects were walked by every full collection: pauses
    of the whole process of 25-50 ms, every second or two under load. `_from_entry` reads both."""
    read_at, fields, state = entry
    kept = list(fields)
    kept[_UUID_AT] = fields[_UUID_AT].int
    kept[_TRAITS_AT] = json.dumps(fields[_TRAITS_AT], cls=DjangoJSONEncoder)
    return (read_at, tuple(kept), state)


def _memo_key(kind: str, value: str) -> tuple[str, str]:
    return (str(kind), value)  # the kind as a plain string: a tuple holding an enum member stays tracked


def _profile_build(fields) -> Profile:
    """The profile `Profile.from_db` makes of PROFILE_FIELDS' values (the others deferred), built
    as unpickling builds a model instance (its fields set, no `__init__`): a third of the cost, paid
    on every cached answer. The uuid and traits may come as `_kept` keeps them."""
    profile = Profile.__new__(Profile)
    data = profile.__dict__
    data.update(zip(PROFILE_FIELDS, fields, strict=True))
    if isinstance(data["uuid"], int):
        data["uuid"] = UUID(int=data["uuid"])
    if isinstance(data["traits"], str):
        data["traits"] = {} if data["traits"] == "{}" else json.loads(data["traits"])
    state = ModelState()
    state.adding, state.db = False, "default"
    data["_state"] = state
    return profile


def _from_entry(entry, kind: str, values: tuple[str, ...]) -> Visitor | None:
    try:
        read_at, fields, state = entry
        profile = _profile_build(fields)
        consent = None if state is None else State(bool(state[0]), int(state[1]))
    except (TypeError, ValueError):  # an entry of another layout: read the database
        return None
    return Visitor(profile, consent, read_at=float(read_at), kind=kind, values=values)


def visitors_warm(*, active_days: int, limit: int | None = None) -> int:
    """Write the cache entries of the visitors seen in the last `active_days` (the ones a publish
    precomputes lists for), newest first, at most `limit` (RECOMMENDERS_VISITOR_WARM_MAX) profiles:
    one query, and the entries sent in pipelined batches. Returns how many identities were written.
    Only with Redis on Postgres (the embedded mode has no shared cache to warm)."""
    from privacy.models import ConsentState

    client = redis_client()
    if connection.vendor != "postgresql" or client is None:
        return 0
    limit = settings.RECOMMENDERS_VISITOR_WARM_MAX if limit is None else limit
    purpose = purposes().get(PURPOSE)
    columns = ", ".join(f"p.{connection.ops.quote_name(f)}" for f in PROFILE_FIELDS)
    sql = (
        f"SELECT i.kind, i.value, {columns}, cs.granted, cs.policy_version "
        f"FROM (SELECT * FROM {Profile._meta.db_table} WHERE last_seen_at >= %s "
        "ORDER BY last_seen_at DESC LIMIT %s) p "
        f"JOIN {Identity._meta.db_table} i ON i.profile_id = p.id "
        f"LEFT JOIN {ConsentState._meta.db_table} cs ON cs.profile_id = p.id AND cs.purpose_id = %s"
    )
    # Read before the query: a change committed meanwhile is stamped after this, so it condemns.
    read_at = time.time()
    traits_at, id_at = PROFILE_FIELDS.index("traits"), PROFILE_FIELDS.index("id")
    traits_field = Profile._meta.get_field("traits")
    redis = client.get_client(write=True)
    written = 0
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now() - timedelta(days=active_days), limit, purpose.id if purpose else -1])
        while rows := cursor.fetchmany(2000):
            entries = []
            for row in rows:
                fields = list(row[2 : 2 + len(PROFILE_FIELDS)])
                fields[traits_at] = traits_field.from_db_value(fields[traits_at], None, connection)
                granted, version = row[2 + len(PROFILE_FIELDS) :]
                entry = (read_at, tuple(fields), None if granted is None else (bool(granted), int(version)))
                entries.append((row[0], row[1], fields[id_at], entry))
            pipe = redis.pipeline(transaction=False)
            for command in _entry_commands(client, entries):
                pipe.execute_command(*command)
            pipe.execute()
            written += len(rows)
    return written


def visitor_index_key(profile_id: int) -> str:
    """The keys of a profile's visitor entries (a set), so erasure can delete them at once."""
    return f"rec:v{cache_keys.VERSION}:visitor-keys:{profile_id}"


def _entry_encode(client, profile_id: int, entry: tuple) -> bytes:
    """An entry as stored: its profile id first (so a script can find the profile's keys), then the
    entry as the cache encodes values."""
    return b"%d|" % int(profile_id) + client.encode(entry)


def _entry_decode(client, raw) -> tuple | None:
    if not isinstance(raw, bytes) or b"|" not in raw:
        return None
    try:
        return client.decode(raw.split(b"|", 1)[1])
    except Exception:  # an entry of another layout: read the database
        return None


def _entry_commands(client, entries: list[tuple[str, str, int, tuple]]) -> list[tuple]:
    """The commands writing (kind, value, profile id, entry): each entry and its place in its
    profile's index."""
    commands = []
    for kind, value, profile_id, entry in entries:
        key = cache.make_key(visitor_key(kind, value))
        index = cache.make_key(visitor_index_key(profile_id))
        commands.append(("SET", key, _entry_encode(client, profile_id, entry), "EX", VISITOR_TTL))
        commands.append(("SADD", index, key))
        commands.append(("EXPIRE", index, VISITOR_TTL + 60))
    return commands


# A visitor the process does not remember, with what the hot path reads next, in one round trip:
# their entry, and through the profile id it starts with, their precomputed list (ARGV[1]: the key
# prefix of the live version's lists, '' for none) and their change stamp (ARGV[2]: its prefix).
# The keys it reads are built in the script, so it needs a single Redis (not a cluster).
_RESOLVE = """
local entry = redis.call('GET', KEYS[1])
if not entry then return {false, false, false} end
local pid = string.match(entry, '^(%d+)|')
if not pid then return {entry, false, false} end
local toplist = false
if ARGV[1] ~= '' then toplist = redis.call('GET', ARGV[1] .. pid) end
return {entry, toplist, redis.call('GET', ARGV[2] .. pid)}
"""


def _remember(
    kind: str, values: tuple[str, ...], visitor: Visitor, read_at: float, *, toplist_prefix: str = ""
) -> object:
    """Keep the visitor in the process and the cache. With `toplist_prefix`, the same round trip
    reads their precomputed list: its raw value is returned (None: none; UNREADABLE: not asked)."""
    entry = _entry(visitor, read_at)
    _local.set(_memo_key(kind, values[0]), (_kept(entry), values))
    client = redis_client()
    if client is None:  # not Redis (the embedded mode)
        safe_set(visitor_key(kind, values[0]), entry, VISITOR_TTL)
        return UNREADABLE
    commands = _entry_commands(client, [(kind, values[0], visitor.profile.pk, entry)])
    if toplist_prefix:
        commands.append(("GET", cache.make_key(f"{toplist_prefix}{visitor.profile.pk}")))
    try:
        answers = hot_pipeline(client, commands)  # a request's writes: the thread's connection
    except CACHE_ERRORS:
        logger.warning("cache unreachable: visitor of profile %s not cached", visitor.profile.pk)
        return UNREADABLE
    return answers[-1] if toplist_prefix else UNREADABLE


def visitors_forget_profile(profile_id: int) -> None:
    """Erasure: delete the profile's visitor entries (their identities are gone from the database by
    then; the index names the entries)."""
    client = redis_client()
    if client is None:
        return
    redis = client.get_client(write=True)
    index = cache.make_key(visitor_index_key(profile_id))
    keys = list(redis.smembers(index))
    redis.delete(*keys, index)


def visitor_cached(kind: str, values: list[str], *, toplist_prefix: str = "") -> Visitor | None:
    """The visitor from this process's memo or the cache when there, else from the database (and
    remembered). A visitor from a cache carries `read_at`: confirm it with `visitor_confirm` (or
    `visitor_is_current` with the stamp read alongside something else) before trusting it.
    `toplist_prefix`: the key prefix of the lists the caller will read (`cache_keys.toplist_prefix`):
    a visitor not in the process's memo comes with their list (and stamp) in `prefetched`, read in
    the round trip that found them."""
    ids = tuple(values)
    # The process keeps the entry (`_kept`); its visitor is built again for each page view.
    remembered = _local.get(_memo_key(kind, ids[0]))
    if remembered is not None and remembered[1] == ids:
        return _from_entry(remembered[0], kind, ids)
    client = redis_client()
    mark = None
    if client is None:
        entry = safe_get(visitor_key(kind, ids[0]))
        found = (entry, UNREADABLE, UNREADABLE)
    else:
        try:
            mark = near_since(client, near_prefixes()) if toplist_prefix else None
            raw, toplist, stamp = hot_script(
                client,
                _RESOLVE,
                keys=[cache.make_key(visitor_key(kind, ids[0]))],
                args=[
                    cache.make_key(toplist_prefix) if toplist_prefix else "",
                    cache.make_key(visitor_stamp_key_prefix()),
                ],
            )
            found = (_entry_decode(client, raw), toplist, stamp)
        except CACHE_ERRORS:
            logger.warning("cache unreachable reading the visitor cache; reading the database")
            found = (None, UNREADABLE, UNREADABLE)
    entry, toplist, stamp = found
    if entry is not None:
        visitor = _from_entry(entry, kind, ids)
        if visitor is not None:
            _local.set(_memo_key(kind, ids[0]), (_kept(entry), ids))
            if toplist_prefix and toplist is not UNREADABLE:  # read by the script, stamp included
                stamp = None if stamp is None else client.decode(stamp)
                return replace(visitor, prefetched=(toplist_prefix, toplist, stamp, mark))
            return visitor
    read_at = time.time()
    visitor = _lookup(kind, values)
    if visitor is None:
        return None
    toplist = _remember(kind, ids, visitor, read_at, toplist_prefix=toplist_prefix)
    prefetched = (toplist_prefix, toplist, None, None) if toplist_prefix and toplist is not UNREADABLE else None
    return Visitor(visitor.profile, visitor.consent, kind=kind, values=ids, prefetched=prefetched)


def visitor_refresh(visitor: Visitor) -> Visitor | None:
    """A stale cached visitor read again from the database (and remembered again)."""
    read_at = time.time()
    fresh = _lookup(visitor.kind, list(visitor.values))
    if fresh is None:
        _local.discard(_memo_key(visitor.kind, visitor.values[0]))
        return None
    _remember(visitor.kind, visitor.values, fresh, read_at)
    return fresh


def visitor_confirm(visitor: Visitor | None) -> Visitor | None:
    """The visitor, checked against their change stamp when it came from a cache."""
    if visitor is None or visitor.read_at is None:
        return visitor
    if visitor_is_current(visitor, visitor_stamp(visitor.profile.pk)):
        return visitor
    return visitor_refresh(visitor)


def visitors_forget() -> None:
    """Empty this process's visitor memo (tests)."""
    _local.clear()


def profile_by_user_id(user_id: str) -> Profile | None:
    visitor = visitor_by_user_id(user_id)
    return visitor.profile if visitor else None


def profile_by_anonymous_id(anonymous_id: str) -> Profile | None:
    visitor = visitor_by_anonymous_id(anonymous_id)
    return visitor.profile if visitor else None


UNKNOWN = _UNKNOWN = object()  # consent state not read yet


def personalization_allowed(*, profile: Profile | None, source: Source, state=_UNKNOWN) -> bool:
    """May this visitor's own data shape what they are shown? Under the source's regime: opt-in
    needs a current grant of `personalization`, opt-out holds unless it was refused. A visitor
    we know nothing of has nothing to personalize from, but under opt-in gets no context either.
    `state`: the consent state when the caller has read it already (None: no decision)."""
    purpose = purposes().get(PURPOSE)
    if purpose is None:
        return True
    if state is _UNKNOWN:
        state = consent_states([profile.pk]).get(profile.pk, {}).get(PURPOSE) if profile is not None else None
    return collection_allowed(
        regime=source.consent_regime,
        policy_version=source.consent_policy_version,
        purpose=PURPOSE,
        required=purpose.required,
        state=state,
        gpc=False,
    )


@dataclass(frozen=True)
class Context:
    """Where and when the visitor is: slices trending lists are cut by."""

    device: str = ""
    country: str = ""
    band: str = ""


def request_context(meta: dict) -> Context:
    """Context of a visitor we have no profile for, from the request itself."""
    from tracking.enrich import parse_user_agent

    device, _, _ = parse_user_agent(meta.get("HTTP_USER_AGENT", ""))
    country = ""
    if settings.GEO_COUNTRY_HEADER:
        country = meta.get("HTTP_" + settings.GEO_COUNTRY_HEADER.upper().replace("-", "_"), "")[:2].upper()
    return Context(device=device if device not in ("bot", "other") else "", country=country)


@dataclass
class Interaction:
    item: str
    type: str
    at: datetime
    received_at: datetime
    weight: float


@dataclass
class History:
    """The visitor's recent weighted interactions (newest first), the items of their latest
    session, what they bought, and their explicit feedback."""

    interactions: list[Interaction] = field(default_factory=list)
    session_items: list[str] = field(default_factory=list)
    purchased: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    thumbs_down: set[str] = field(default_factory=set)
    thumbs_up: dict[str, datetime] = field(default_factory=dict)
    latest_received: float | None = None  # unix time the newest weighted event/feedback arrived
    local_hour: int | None = None
    read_at: float = 0.0  # unix time just before the read: everything that arrived earlier is in here

    @property
    def positive_items(self) -> list[str]:
        """Distinct items with a positive interaction, most recent first."""
        out: dict[str, None] = {}
        for interaction in self.interactions:
            if interaction.weight > 0:
                out.setdefault(interaction.item, None)
        for item in self.thumbs_up:
            out.setdefault(item, None)
        return list(out)

    def anchor_verb(self, item: str) -> str:
        """How the visitor met `item`, for "because you <verb> X": the strongest event type."""
        if item in self.thumbs_up:
            return VERBS["thumbs_up"]
        types = {i.type for i in self.interactions if i.item == item}
        for event_type in ("purchase", "add_to_cart"):
            if event_type in types:
                return VERBS[event_type]
        return "viewed"


def _history_rows(profile_id: int, limit: int) -> tuple[list[tuple], list[tuple]]:
    """The visitor's latest events `(type, properties, timestamp, received_at, local_hour)`, newest
    first, and their feedback `(item external id, kind, created_at)`. On Postgres in one round trip
    of one raw statement (recomputing on read is on the request path); elsewhere two ORM queries."""
    if connection.vendor != "postgresql":
        return _history_rows_orm(profile_id, limit)
    from recommenders.models import Item

    sql = (
        "(SELECT 0, e.type, e.properties, e.timestamp, e.received_at, e.local_hour, e.id "
        f"FROM {Event._meta.db_table} e WHERE e.profile_id = %s ORDER BY e.timestamp DESC, e.id DESC LIMIT %s) "
        "UNION ALL "
        "(SELECT 1, f.kind, to_jsonb(i.external_id), f.created_at, NULL, NULL, f.id "
        f"FROM {Feedback._meta.db_table} f JOIN {Item._meta.db_table} i ON i.id = f.item_id WHERE f.profile_id = %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [profile_id, limit, profile_id])
        fetched = cursor.fetchall()
    events: list[tuple] = []
    feedback: list[tuple] = []
    for source, kind, value, at, received, hour, row_id in fetched:
        value = json.loads(value) if isinstance(value, str | bytes) else value  # jsonb arrives as text
        if source == 0:
            events.append((kind, value, at, received, hour, row_id))
        else:
            feedback.append((value, kind, at))
    events.sort(key=lambda row: (row[2], row[5]), reverse=True)  # a UNION promises no order
    return [row[:5] for row in events], feedback


def _history_rows_orm(profile_id: int, limit: int) -> tuple[list[tuple], list[tuple]]:
    events = list(
        Event.objects.filter(profile_id=profile_id)
        .order_by("-timestamp", "-id")
        .values_list("type", "properties", "timestamp", "received_at", "local_hour")[:limit]
    )
    feedback = list(
        Feedback.objects.filter(profile_id=profile_id).values_list("item__external_id", "kind", "created_at")
    )
    return events, feedback


def history_load(*, profile: Profile, weights: dict[str, float], half_life_days: float | None) -> History:
    """The visitor's latest events (bounded, newest first, through the (profile, -timestamp)
    index) and feedback: two queries. Weights and decay are the configuration's, so a row built
    from them scores like the training matrix."""
    history = History(read_at=time.time())
    rows, feedback = _history_rows(profile.pk, settings.RECOMMENDERS_SERVE_HISTORY_EVENTS)
    now = timezone.now()
    rate = math.log(2) / (half_life_days * 86400.0) if half_life_days else 0.0
    session_end: datetime | None = None
    in_session = True
    latest = None
    for event_type, properties, at, received_at, local_hour in rows:
        if history.local_hour is None and local_hour is not None:
            history.local_hour = local_hour
        items = item_ids_in_properties(properties)
        if session_end is not None and (session_end - at).total_seconds() > SESSION_GAP_SECONDS:
            in_session = False
        session_end = at
        if not items:
            continue
        if in_session:
            for item in items:
                if item not in history.session_items:
                    history.session_items.append(item)
        history.seen.update(items)
        if event_type == "purchase":
            history.purchased.update(items)
        weight = weights.get(event_type)
        if not weight:
            continue
        decayed = weight * math.exp(-rate * max((now - at).total_seconds(), 0.0))
        for item in items:
            history.interactions.append(Interaction(item, event_type, at, received_at, decayed))
        received = received_at.timestamp()
        latest = received if latest is None else max(latest, received)
    for item, kind, created_at in feedback:
        if kind == Feedback.Kind.DOWN:
            history.thumbs_down.add(item)
        else:
            history.thumbs_up[item] = created_at
        stamp = created_at.timestamp()
        latest = stamp if latest is None else max(latest, stamp)
    history.latest_received = latest
    return history


def stated_preferences(profile: Profile | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categories, tags) the visitor stated, from their traits: `preferences: {categories: [...],
    tags: [...]}` (what an onboarding form sends with `identify`), or a flat `interests: [...]`."""
    if profile is None or not isinstance(profile.traits, dict):
        return (), ()
    traits = profile.traits
    prefs = traits.get("preferences")
    categories: list[str] = []
    tags: list[str] = []
    if isinstance(prefs, dict):
        categories = [str(c) for c in prefs.get("categories") or [] if isinstance(c, str | int)]
        tags = [str(t) for t in prefs.get("tags") or [] if isinstance(t, str | int)]
    interests = traits.get("interests")
    if isinstance(interests, list):
        words = [str(i) for i in interests if isinstance(i, str | int)]
        categories += words
        tags += words
    return tuple(dict.fromkeys(c.strip().lower() for c in categories if c.strip())), tuple(
        dict.fromkeys(t.strip().lower() for t in tags if t.strip())
    )

"""Event ingestion: validate, enrich, resolve profiles, store exactly once, update aggregates.

Everything an accepted event changes (the event row, its profile's identities, traits and
aggregates) is written in one transaction, so a 2xx answer means it is all in the database, and a
retried `message_id` changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from personalization.db import execute_prepared
from tracking import wire
from tracking.enrich import Enrichment, enrich
from tracking.models import Event, Identity, Profile, ProfileEventStat, Source
from tracking.services.aggregates import (
    DELTA_COLUMNS,
    DELTA_ROW,
    LAST_FIELDS,
    Item,
    aggregates_apply,
    delta_params,
    deltas_build,
    profile_update_sql,
    stats_conflict_sql,
)
from tracking.services.identity import (
    event_keys,
    identities_claim,
    identities_fetch,
    identity_hash,
    profiles_resolve,
)
from tracking.services.rejections import rejection_count

logger = logging.getLogger(__name__)

VALUE_PROPERTIES = ("revenue", "total", "value")
INSERT_CHUNK = 400
RETRIES = 3


@dataclass(slots=True)
class RequestMeta:
    """What the HTTP request adds to every event it carries."""

    user_agent: str = ""
    ip: str = ""
    country: str = ""
    received_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[wire.Rejected] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [r.as_dict() for r in self.rejected],
        }


Parser = Callable[..., wire.EventIn]


def events_check(
    raws: list, *, parse: Parser, path: str, meta: RequestMeta, **parse_options
) -> tuple[list[wire.EventIn], list[wire.Rejected]]:
    """Validate a batch; every bad event is rejected with where and why, the good ones kept."""
    max_bytes = settings.INGEST_MAX_EVENT_BYTES
    received_at = meta.received_at or timezone.now()
    events: list[wire.EventIn] = []
    rejected: list[wire.Rejected] = []
    for index, raw in enumerate(raws):
        event_path = f"{path}[{index}]" if path else ""
        message_id = ""
        if isinstance(raw, dict):
            candidate = raw.get("message_id", raw.get("messageId"))
            message_id = candidate if isinstance(candidate, str) else ""
        encoded = json.dumps(raw, separators=(",", ":"), default=str, ensure_ascii=False)
        size = len(encoded.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            rejected.append(
                wire.Rejected(
                    index,
                    event_path or "body",
                    f"is {size} bytes, over the limit of {max_bytes}",
                    message_id[:100],
                    "too_large",
                )
            )
            continue
        try:
            events.append(
                parse(
                    raw,
                    index=index,
                    path=event_path,
                    received_at=received_at,
                    sent_at=meta.sent_at,
                    max_future=settings.INGEST_MAX_FUTURE,
                    **parse_options,
                )
            )
        except wire.Invalid as exc:
            rejected.append(wire.Rejected(index, exc.path, exc.message, message_id[:100]))
    return events, rejected


def events_ingest(
    *, source: Source, events: list[wire.EventIn], rejected: list[wire.Rejected] | None = None, meta: RequestMeta
) -> IngestResult:
    """Store checked events of one source. Duplicates (same message_id) are counted, not stored."""
    result = IngestResult(rejected=list(rejected or []))
    if result.rejected:
        for reason in {r.reason for r in result.rejected}:
            rejection_count(source=source, reason=reason, count=sum(r.reason == reason for r in result.rejected))
    if not events:
        return result
    received_at = meta.received_at or timezone.now()
    unique: dict[str, wire.EventIn] = {}
    for event in events:
        unique.setdefault(event.message_id, event)
    batch = list(unique.values())
    prepared = [(event, _enrich(event, meta)) for event in batch]
    if len(prepared) == 1 and connection.vendor == "postgresql":
        inserted = _store_single(source, *prepared[0], received_at)
        if inserted is not None:
            result.accepted = len(events)
            result.duplicates = len(events) - inserted
            return result
    for attempt in range(RETRIES):
        try:
            with transaction.atomic():
                inserted = _store(source, prepared, received_at)
            break
        except (OperationalError, IntegrityError) as exc:
            # Deadlocks, serialization failures and lost identity races: the whole batch rolled
            # back, so running it again is safe.
            if attempt == RETRIES - 1:
                raise
            logger.warning("ingest retry %d after %s", attempt + 1, exc.__class__.__name__)
            time.sleep(0.01 * (attempt + 1))
    result.accepted = len(events)
    result.duplicates = len(events) - inserted
    return result


def _enrich(event: wire.EventIn, meta: RequestMeta) -> Enrichment:
    return enrich(
        event.context,
        event.timestamp,
        request_user_agent=meta.user_agent,
        request_ip=meta.ip,
        request_country=meta.country,
    )


def _event_value(properties: dict) -> Decimal | None:
    for name in VALUE_PROPERTIES:
        raw = properties.get(name)
        if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
            try:
                value = Decimal(str(raw)).quantize(Decimal("0.01"))
            except (InvalidOperation, ValueError):
                continue
            if value.is_finite() and abs(value) < Decimal("1e12"):
                return value
    return None


def _stored_traits(traits: dict) -> dict:
    # Emails live only as keyed-hash identities, never in clear.
    return {k: v for k, v in traits.items() if k != "email"} if "email" in traits else traits


def _stored_context(context: dict, enrichment: Enrichment) -> dict:
    if "ip" not in context and "traits" not in context:
        return context
    stored = dict(context)
    if "ip" in stored:
        stored["ip"] = enrichment.ip_truncated
    if isinstance(stored.get("traits"), dict):
        stored["traits"] = _stored_traits(stored["traits"])
    return stored


def _store(source: Source, prepared: list[tuple[wire.EventIn, Enrichment]], received_at: datetime) -> int:
    profile_of = profiles_resolve([event for event, _ in prepared])
    inserted_ids = _events_insert(source, prepared, profile_of, received_at)
    fresh = [(event, enrichment) for event, enrichment in prepared if event.message_id in inserted_ids]
    aggregates_apply([_item(profile_of[event.index], event, e) for event, e in fresh], source_id=source.pk)
    return len(fresh)


EVENT_COLUMNS = (
    "source_id",
    "profile_id",
    "message_id",
    "kind",
    "type",
    "anonymous_id",
    "user_hash",
    "timestamp",
    "received_at",
    "properties",
    "context",
    "value",
    "device_type",
    "os",
    "browser",
    "country",
    "traffic_source",
    "local_hour",
    "local_weekday",
    "ip_truncated",
)
EVENT_CASTS = {
    "source_id": "bigint",
    "message_id": "text",
    "kind": "text",
    "type": "text",
    "anonymous_id": "text",
    "user_hash": "text",
    "device_type": "text",
    "os": "text",
    "browser": "text",
    "country": "text",
    "traffic_source": "text",
    "timestamp": "timestamptz",
    "received_at": "timestamptz",
    "properties": "jsonb",
    "context": "jsonb",
    "value": "numeric",
    "local_hour": "smallint",
    "local_weekday": "smallint",
    "ip_truncated": "inet",
}


def _event_params(source: Source, profile_id: int | None, event: wire.EventIn, e: Enrichment, received) -> list:
    """Values of EVENT_COLUMNS for one event."""
    properties = event.properties
    if event.kind == "identify" and event.traits:
        properties = {**properties, "traits": _stored_traits(event.traits)}
    value = _event_value(event.properties)
    return [
        source.pk,
        profile_id,
        event.message_id,
        event.kind,
        event.type,
        event.anonymous_id,
        identity_hash(event.user_id) if event.user_id else "",
        connection.ops.adapt_datetimefield_value(event.timestamp),
        received,
        json.dumps(properties, ensure_ascii=False, default=str),
        json.dumps(_stored_context(event.context, e), ensure_ascii=False, default=str),
        None if value is None else str(value),
        e.device_type,
        e.os,
        e.browser,
        e.country,
        e.traffic_source,
        e.local_hour,
        e.local_weekday,
        e.ip_truncated,
    ]


def _events_insert_postgres(
    source: Source, prepared: list[tuple[wire.EventIn, Enrichment]], profile_of: dict[int, int], received_at: datetime
) -> set[str]:
    """All rows as one JSON parameter, unpacked by jsonb_to_recordset: properties and context travel
    as JSON once, instead of as thousands of separately quoted parameters."""
    received = received_at.isoformat()
    rows = []
    for event, e in prepared:
        properties = event.properties
        if event.kind == "identify" and event.traits:
            properties = {**properties, "traits": _stored_traits(event.traits)}
        value = _event_value(event.properties)
        rows.append(
            {
                "source_id": source.pk,
                "profile_id": profile_of[event.index],
                "message_id": event.message_id,
                "kind": event.kind,
                "type": event.type,
                "anonymous_id": event.anonymous_id,
                "user_hash": identity_hash(event.user_id) if event.user_id else "",
                "timestamp": event.timestamp.isoformat(),
                "received_at": received,
                "properties": properties,
                "context": _stored_context(event.context, e),
                "value": None if value is None else str(value),
                "device_type": e.device_type,
                "os": e.os,
                "browser": e.browser,
                "country": e.country,
                "traffic_source": e.traffic_source,
                "local_hour": e.local_hour,
                "local_weekday": e.local_weekday,
                "ip_truncated": e.ip_truncated,
            }
        )
    columns = ", ".join(f'"{column}"' for column in EVENT_COLUMNS)
    types = ", ".join(f'"{column}" {EVENT_CASTS.get(column, "bigint")}' for column in EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} ({columns}) SELECT {columns} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS r({types}) "
            "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id",
            [json.dumps(rows, ensure_ascii=False, default=str)],
        )
        return {row[0] for row in cursor.fetchall()}


def _events_insert(
    source: Source, prepared: list[tuple[wire.EventIn, Enrichment]], profile_of: dict[int, int], received_at: datetime
) -> set[str]:
    if connection.vendor == "postgresql":
        return _events_insert_postgres(source, prepared, profile_of, received_at)
    received = connection.ops.adapt_datetimefield_value(received_at)
    row_sql = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    table = Event._meta.db_table
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(prepared), INSERT_CHUNK):
            chunk = prepared[start : start + INSERT_CHUNK]
            params: list = []
            for event, e in chunk:
                params.extend(_event_params(source, profile_of[event.index], event, e, received))
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(EVENT_COLUMNS)}) VALUES {', '.join([row_sql] * len(chunk))} "
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id",
                params,
            )
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def _item(profile_id: int, event: wire.EventIn, e: Enrichment) -> Item:
    return Item(
        profile_id=profile_id,
        type=event.type,
        timestamp=event.timestamp,
        value=_event_value(event.properties),
        traits=_stored_traits(event.traits) if event.traits else event.traits,
        context={
            "device_type": e.device_type,
            "os": e.os,
            "browser": e.browser,
            "country": e.country,
            "traffic_source": e.traffic_source,
        },
    )


class _FallBack(Exception):
    """The single-event shortcut does not apply after all: roll it back, take the general path."""


def _store_single(source: Source, event: wire.EventIn, e: Enrichment, received_at: datetime) -> int | None:
    """A single event on Postgres, the shape of most live traffic, in the fewest round trips: one
    statement for a returning visitor, one short transaction for a first visit. Returns how many
    events were stored (0: a duplicate), or None when the general path must decide (a merge, an
    alias, identifiers known in part)."""
    keys = event_keys(event)
    if event.previous_id or not keys:
        return None
    target, inserted, known = _store_known_visitor(source, event, e, received_at, keys)
    if target is not None:
        return inserted
    if known:
        return None
    try:
        with transaction.atomic():
            identities_claim(set(keys))
            if identities_fetch(keys):
                raise _FallBack  # another request brought this visitor first
            return _store_new_visitor(source, event, e, received_at, keys)
    except (_FallBack, IntegrityError):
        return None


def _store_new_visitor(
    source: Source, event: wire.EventIn, e: Enrichment, received_at: datetime, keys: list[tuple[str, str]]
) -> int:
    """A first visit in one statement: the profile with its aggregates already counted, its
    identities, the event and its per-type stats."""
    (delta,), stats = deltas_build([_item(0, event, e)], source_id=source.pk)
    ((_, event_type), (_, value_sum, first_at, last_at)) = next(iter(stats.items()))
    select = ", ".join(
        "prof.id" if column == "profile_id" else f"%s::{EVENT_CASTS[column]}" for column in EVENT_COLUMNS
    )
    row = _event_params(source, None, event, e, connection.ops.adapt_datetimefield_value(received_at))
    row.pop(EVENT_COLUMNS.index("profile_id"))
    last_columns = ", ".join(f"last_{name}" for name in LAST_FIELDS)
    sql = (
        f"WITH prof AS (INSERT INTO {Profile._meta.db_table} (uuid, traits, first_seen_at, last_seen_at, "
        f"event_count, session_count, purchase_count, revenue, last_source_id, {last_columns}, created_at) "
        "VALUES (%s::uuid, %s::jsonb, %s::timestamptz, %s::timestamptz, 1, 1, %s::int, %s::numeric, %s::bigint, "
        + ", ".join(["%s::text"] * len(LAST_FIELDS))
        + ", now()) RETURNING id), "
        f"ids AS (INSERT INTO {Identity._meta.db_table} (profile_id, kind, value, created_at) "
        "SELECT prof.id, k.kind, k.value, now() FROM prof, (VALUES "
        + ", ".join(["(%s::text, %s::text)"] * len(keys))
        + ") AS k(kind, value) RETURNING 1), "
        f"ins AS (INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) SELECT {select} FROM prof "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING profile_id), "
        f"st AS (INSERT INTO {ProfileEventStat._meta.db_table} "
        "(profile_id, event_type, count, value_sum, first_at, last_at) "
        "SELECT ins.profile_id, %s::text, 1, %s::numeric, %s::timestamptz, %s::timestamptz FROM ins) "
        "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ids)"
    )
    params: list = [str(uuid.uuid4()), json.dumps(delta.traits, ensure_ascii=False, default=str), first_at, last_at]
    params.extend([delta.purchases, str(delta.revenue), source.pk])
    params.extend(delta.last.get(name, "") for name in LAST_FIELDS)
    params.extend(part for key in keys for part in key)
    params.extend(row)
    params.extend([event_type, str(value_sum), first_at, last_at])
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        inserted, _ = cursor.fetchone()
    if not inserted:
        # The message id was stored before under other identifiers: let the general path sort it.
        raise _FallBack
    return inserted


def _store_known_visitor(
    source: Source, event: wire.EventIn, e: Enrichment, received_at: datetime, keys: list[tuple[str, str]]
) -> tuple[int | None, int, int]:
    """A returning visitor's event in one statement: when all its identifiers are known and name one
    profile, the event, the profile's aggregates and the per-type stats are written by one atomic
    statement with data-modifying CTEs. Returns (profile id or None, events stored, identifiers known)."""
    (delta,), stats = deltas_build([_item(0, event, e)], source_id=source.pk)
    ((_, event_type), (_, value_sum, first_at, last_at)) = next(iter(stats.items()))
    match = " OR ".join(["(kind = %s AND value = %s)"] * len(keys))
    select = ", ".join(
        "target.id" if column == "profile_id" else f"%s::{EVENT_CASTS[column]}" for column in EVENT_COLUMNS
    )
    row = _event_params(source, None, event, e, connection.ops.adapt_datetimefield_value(received_at))
    row.pop(EVENT_COLUMNS.index("profile_id"))
    sql = (
        f"WITH ident AS (SELECT profile_id FROM {Identity._meta.db_table} WHERE {match}), "
        "target AS (SELECT min(profile_id) AS id FROM ident HAVING count(*) = %s AND count(DISTINCT profile_id) = 1), "
        f"ins AS (INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) SELECT {select} FROM target "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING profile_id), "
        "upd AS ("
        + profile_update_sql(
            rows=f"(VALUES ({DELTA_ROW})) AS v({', '.join(DELTA_COLUMNS)}), ins", where="p.id = ins.profile_id"
        )
        + " RETURNING p.id), "
        f"st AS (INSERT INTO {ProfileEventStat._meta.db_table} "
        "(profile_id, event_type, count, value_sum, first_at, last_at) "
        # Reading upd's rows makes the profile row locked before the stats row, the order every
        # path takes: no deadlock with a concurrent batch.
        "SELECT ins.profile_id, %s::text, 1, %s::numeric, %s::timestamptz, %s::timestamptz "
        "FROM ins JOIN upd ON upd.id = ins.profile_id"
        + stats_conflict_sql()
        + ") SELECT (SELECT id FROM target), (SELECT count(*) FROM ins), (SELECT count(*) FROM ident)"
    )
    params: list = [part for key in keys for part in key]
    params.append(len(keys))
    params.extend(row)
    params.extend(delta_params(delta))
    params.extend([event_type, str(value_sum), first_at, last_at])
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        return cursor.fetchone()

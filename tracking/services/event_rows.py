"""Stored event rows: the event table's columns, one event's values, and the multi-row insert."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import connection

from tracking import wire
from tracking.enrich import Enrichment
from tracking.models import Event, Source
from tracking.services.aggregates import Item
from tracking.services.identity import identity_hash
from tracking.signals import StoredEvent

VALUE_PROPERTIES = ("revenue", "total", "value")
INSERT_CHUNK = 400


def event_value(properties: dict) -> Decimal | None:
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


IDENTIFIER_TRAITS = frozenset({"email", "phone"})


def stored_traits(traits: dict) -> dict:
    # Emails and phone numbers live only as keyed-hash identities, never in clear.
    if IDENTIFIER_TRAITS.isdisjoint(traits):
        return traits
    return {k: v for k, v in traits.items() if k not in IDENTIFIER_TRAITS}


def stored_context(context: dict, enrichment: Enrichment) -> dict:
    if "ip" not in context and "traits" not in context:
        return context
    stored = dict(context)
    if "ip" in stored:
        stored["ip"] = enrichment.ip_truncated
    if isinstance(stored.get("traits"), dict):
        stored["traits"] = stored_traits(stored["traits"])
    return stored


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


def event_params(source: Source, profile_id: int | None, event: wire.EventIn, e: Enrichment, received) -> list:
    """Values of EVENT_COLUMNS for one event."""
    properties = event.properties
    if event.kind == "identify" and event.traits:
        properties = {**properties, "traits": stored_traits(event.traits)}
    value = event_value(event.properties)
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
        json.dumps(stored_context(event.context, e), ensure_ascii=False, default=str),
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
            properties = {**properties, "traits": stored_traits(event.traits)}
        value = event_value(event.properties)
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
                "context": stored_context(event.context, e),
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


def events_insert(
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
                params.extend(event_params(source, profile_of[event.index], event, e, received))
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(EVENT_COLUMNS)}) VALUES {', '.join([row_sql] * len(chunk))} "
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id",
                params,
            )
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def event_item(profile_id: int, event: wire.EventIn, e: Enrichment) -> Item:
    return Item(
        profile_id=profile_id,
        type=event.type,
        timestamp=event.timestamp,
        value=event_value(event.properties),
        traits=stored_traits(event.traits) if event.traits else event.traits,
        context={
            "device_type": e.device_type,
            "os": e.os,
            "browser": e.browser,
            "country": e.country,
            "traffic_source": e.traffic_source,
        },
    )


def stored_event(profile_id: int, event: wire.EventIn) -> StoredEvent:
    return StoredEvent(profile_id=profile_id, type=event.type, timestamp=event.timestamp, properties=event.properties)

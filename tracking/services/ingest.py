"""Event ingestion: validate, enrich, resolve profiles, store exactly once, update aggregates.

Everything an accepted event changes (the event row, its profile's identities, traits and
aggregates) is written in one transaction, so a 2xx answer means it is all in the database, and a
retried `message_id` changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from tracking import wire
from tracking.enrich import Enrichment, enrich
from tracking.models import SUM_MAX, Event, Profile, ProfileEventStat, Source
from tracking.services.identity import identity_hash, profiles_resolve
from tracking.services.rejections import rejection_count

logger = logging.getLogger(__name__)

PURCHASE_TYPES = frozenset({"purchase"})
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
    if fresh:
        _aggregates_apply(source, fresh, profile_of)
    return len(fresh)


def _events_insert(
    source: Source, prepared: list[tuple[wire.EventIn, Enrichment]], profile_of: dict[int, int], received_at: datetime
) -> set[str]:
    ops = connection.ops
    received = ops.adapt_datetimefield_value(received_at)
    columns = (
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
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    table = Event._meta.db_table
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(prepared), INSERT_CHUNK):
            chunk = prepared[start : start + INSERT_CHUNK]
            params: list = []
            for event, e in chunk:
                properties = event.properties
                if event.kind == "identify" and event.traits:
                    properties = {**properties, "traits": _stored_traits(event.traits)}
                value = _event_value(event.properties)
                params.extend(
                    (
                        source.pk,
                        profile_of[event.index],
                        event.message_id,
                        event.kind,
                        event.type,
                        event.anonymous_id,
                        identity_hash(event.user_id) if event.user_id else "",
                        ops.adapt_datetimefield_value(event.timestamp),
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
                    )
                )
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row_sql] * len(chunk))} "
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id",
                params,
            )
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def _aggregates_apply(source: Source, fresh: list[tuple[wire.EventIn, Enrichment]], profile_of: dict[int, int]) -> None:
    by_profile: dict[int, list[tuple[wire.EventIn, Enrichment]]] = defaultdict(list)
    for event, enrichment in fresh:
        by_profile[profile_of[event.index]].append((event, enrichment))
    profiles = list(Profile.objects.select_for_update().filter(pk__in=by_profile).order_by("pk"))
    gap = settings.INGEST_SESSION_GAP
    stats: dict[tuple[int, str], list] = {}
    for profile in profiles:
        items = sorted(by_profile[profile.pk], key=lambda pair: pair[0].timestamp)
        last_seen = None if profile.event_count == 0 else profile.last_seen_at
        for event, enrichment in items:
            if last_seen is None or event.timestamp - last_seen > gap:
                profile.session_count += 1
            if last_seen is None or event.timestamp >= last_seen:
                last_seen = event.timestamp
                profile.last_source_id = source.pk
                profile.last_device_type = enrichment.device_type or profile.last_device_type
                profile.last_os = enrichment.os or profile.last_os
                profile.last_browser = enrichment.browser or profile.last_browser
                profile.last_country = enrichment.country or profile.last_country
                profile.last_traffic_source = enrichment.traffic_source or profile.last_traffic_source
            if event.traits and event.kind in ("identify", "track", "page", "screen"):
                profile.traits = {**profile.traits, **_stored_traits(event.traits)}
            value = _event_value(event.properties) or Decimal(0)
            if event.type in PURCHASE_TYPES:
                profile.purchase_count += 1
                profile.revenue = min(profile.revenue + value, SUM_MAX)
            stat = stats.setdefault((profile.pk, event.type), [0, Decimal(0), event.timestamp, event.timestamp])
            stat[0] += 1
            stat[1] = min(stat[1] + value, SUM_MAX)
            stat[2] = min(stat[2], event.timestamp)
            stat[3] = max(stat[3], event.timestamp)
        profile.event_count += len(items)
        profile.first_seen_at = min(profile.first_seen_at, items[0][0].timestamp)
        profile.last_seen_at = max(profile.last_seen_at, last_seen or profile.last_seen_at)
    Profile.objects.bulk_update(profiles, PROFILE_AGGREGATE_FIELDS)
    _stats_upsert(stats)


PROFILE_AGGREGATE_FIELDS = [
    "traits",
    "first_seen_at",
    "last_seen_at",
    "event_count",
    "session_count",
    "purchase_count",
    "revenue",
    "last_source",
    "last_device_type",
    "last_os",
    "last_browser",
    "last_country",
    "last_traffic_source",
]


def _stats_upsert(stats: dict[tuple[int, str], list]) -> None:
    if not stats:
        return
    ops = connection.ops
    table = ProfileEventStat._meta.db_table
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    rows = sorted(stats.items())
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            params: list = []
            for (profile_id, event_type), (count, value_sum, first_at, last_at) in chunk:
                params.extend(
                    (
                        profile_id,
                        event_type,
                        count,
                        str(value_sum),
                        ops.adapt_datetimefield_value(first_at),
                        ops.adapt_datetimefield_value(last_at),
                    )
                )
            cursor.execute(
                f"INSERT INTO {table} (profile_id, event_type, count, value_sum, first_at, last_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
                + f" ON CONFLICT (profile_id, event_type) DO UPDATE SET count = {table}.count + excluded.count, "
                f"value_sum = {least}({table}.value_sum + excluded.value_sum, {SUM_MAX}), "
                f"first_at = {least}({table}.first_at, excluded.first_at), "
                f"last_at = {greatest}({table}.last_at, excluded.last_at)",
                params,
            )

"""Profile aggregates kept with each stored event: counts, sessions, purchases, revenue, last context.

The batch is summarised per profile in Python (`ProfileDelta`), then applied with one UPDATE per
batch on Postgres, computed from the row as the database holds it at that moment, so concurrent
batches for one profile add up correctly without reading the row first. SQLite (the embedded
default, one writer at a time) applies the same deltas through the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection

from tracking.models import SUM_MAX, Profile, ProfileEventStat

PURCHASE_TYPES = frozenset({"purchase"})
LAST_FIELDS = ("device_type", "os", "browser", "country", "traffic_source")


@dataclass
class ProfileDelta:
    """What one batch adds to one profile."""

    profile_id: int
    source_id: int
    count: int = 0
    purchases: int = 0
    revenue: Decimal = Decimal(0)
    first_at: datetime | None = None
    last_at: datetime | None = None
    # Times of the batch's events that follow a gap longer than the session gap inside the batch:
    # each starts a session unless the profile was seen within the gap before it.
    session_starts: list[datetime] = field(default_factory=list)
    traits: dict = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Item:
    """One stored event, as the aggregates see it."""

    profile_id: int
    type: str
    timestamp: datetime
    value: Decimal | None
    traits: dict
    context: dict[str, str]  # LAST_FIELDS -> value ('' when unknown)


def deltas_build(items: list[Item], *, source_id: int) -> tuple[list[ProfileDelta], dict[tuple[int, str], list]]:
    """Per-profile deltas and per-(profile, event type) stats of a batch of new events."""
    gap = settings.INGEST_SESSION_GAP
    by_profile: dict[int, list[Item]] = {}
    for item in items:
        by_profile.setdefault(item.profile_id, []).append(item)
    deltas: list[ProfileDelta] = []
    stats: dict[tuple[int, str], list] = {}
    for profile_id in sorted(by_profile):
        ordered = sorted(by_profile[profile_id], key=lambda i: i.timestamp)
        delta = ProfileDelta(profile_id=profile_id, source_id=source_id, count=len(ordered))
        delta.first_at, delta.last_at = ordered[0].timestamp, ordered[-1].timestamp
        previous = None
        for item in ordered:
            if previous is None or item.timestamp - previous > gap:
                delta.session_starts.append(item.timestamp)
            previous = item.timestamp
            for name in LAST_FIELDS:
                if item.context.get(name):
                    delta.last[name] = item.context[name]
            if item.traits:
                delta.traits.update(item.traits)
            value = item.value or Decimal(0)
            if item.type in PURCHASE_TYPES:
                delta.purchases += 1
                delta.revenue = min(delta.revenue + value, SUM_MAX)
            stat = stats.setdefault((profile_id, item.type), [0, Decimal(0), item.timestamp, item.timestamp])
            stat[0] += 1
            stat[1] = min(stat[1] + value, SUM_MAX)
            stat[2] = min(stat[2], item.timestamp)
            stat[3] = max(stat[3], item.timestamp)
        deltas.append(delta)
    return deltas, stats


def aggregates_apply(items: list[Item], *, source_id: int) -> None:
    deltas, stats = deltas_build(items, source_id=source_id)
    if not deltas:
        return
    if connection.vendor == "postgresql":
        _apply_postgres(deltas, stats)
    else:
        _apply_orm(deltas)
        _stats_upsert(stats)


DELTA_COLUMNS = ("source_id", "n", "starts", "purchases", "revenue", "first_at", "last_at", "traits", *LAST_FIELDS)
# Every value typed, so that the row also works as a prepared statement's parameters.
DELTA_ROW = (
    "%s::bigint, %s::int, %s::timestamptz[], %s::int, %s::numeric, %s::timestamptz, %s::timestamptz, %s::jsonb, "
    + ", ".join(["%s::text"] * len(LAST_FIELDS))
)


def delta_params(d: ProfileDelta) -> list:
    """Parameters of one DELTA_ROW."""
    params = [d.source_id, d.count, d.session_starts, d.purchases, str(d.revenue), d.first_at, d.last_at]
    params.append(_json(d.traits))
    params.extend(d.last.get(name, "") for name in LAST_FIELDS)
    return params


DELTA_TYPES = (
    "source_id bigint, n int, starts timestamptz[], purchases int, revenue numeric, first_at timestamptz, "
    "last_at timestamptz, traits jsonb, " + ", ".join(f"{name} text" for name in LAST_FIELDS)
)


def profile_update_sql(*, rows: str, where: str) -> str:
    """UPDATE of profiles `p` by deltas `v` (DELTA_COLUMNS), computed from the row as stored when the
    update runs: concurrent updates of one profile add up without reading it first."""
    gap_seconds = int(settings.INGEST_SESSION_GAP.total_seconds())
    # "Fresh": the profile has no stored event yet, or the batch is its newest news.
    fresh = "(p.event_count = 0 OR v.last_at >= p.last_seen_at)"
    last_columns = ", ".join(
        f"last_{name} = CASE WHEN {fresh} AND v.{name} <> '' THEN v.{name} ELSE p.last_{name} END"
        for name in LAST_FIELDS
    )
    return (
        f"UPDATE {Profile._meta.db_table} AS p SET "
        "event_count = p.event_count + v.n, "
        "session_count = p.session_count + (SELECT count(*) FROM unnest(v.starts) AS s "
        f"  WHERE p.event_count = 0 OR s > p.last_seen_at + make_interval(secs => {gap_seconds})), "
        "purchase_count = p.purchase_count + v.purchases, "
        f"revenue = LEAST(p.revenue + v.revenue, {SUM_MAX}), "
        "first_seen_at = CASE WHEN p.event_count = 0 THEN v.first_at ELSE LEAST(p.first_seen_at, v.first_at) END, "
        "last_seen_at = CASE WHEN p.event_count = 0 THEN v.last_at ELSE GREATEST(p.last_seen_at, v.last_at) END, "
        "traits = p.traits || v.traits, "
        f"last_source_id = CASE WHEN {fresh} THEN v.source_id ELSE p.last_source_id END, "
        f"{last_columns} "
        f"FROM {rows} WHERE {where}"
    )


def stats_conflict_sql() -> str:
    table = ProfileEventStat._meta.db_table
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    return (
        f" ON CONFLICT (profile_id, event_type) DO UPDATE SET count = {table}.count + excluded.count, "
        f"value_sum = {least}({table}.value_sum + excluded.value_sum, {SUM_MAX}), "
        f"first_at = {least}({table}.first_at, excluded.first_at), "
        f"last_at = {greatest}({table}.last_at, excluded.last_at)"
    )


def _apply_postgres(deltas: list[ProfileDelta], stats: dict[tuple[int, str], list]) -> None:
    # Each table's rows travel as one JSON parameter, unpacked by jsonb_to_recordset: far cheaper
    # to send than thousands of separately quoted parameters.
    delta_rows = [
        {
            "id": d.profile_id,
            "source_id": d.source_id,
            "n": d.count,
            "starts": [s.isoformat() for s in d.session_starts],
            "purchases": d.purchases,
            "revenue": str(d.revenue),
            "first_at": d.first_at.isoformat(),
            "last_at": d.last_at.isoformat(),
            "traits": d.traits,
            **{name: d.last.get(name, "") for name in LAST_FIELDS},
        }
        for d in deltas
    ]
    stat_rows = [
        {
            "profile_id": pid,
            "event_type": etype,
            "count": n,
            "value_sum": str(vs),
            "first_at": fa.isoformat(),
            "last_at": la.isoformat(),
        }
        for (pid, etype), (n, vs, fa, la) in sorted(stats.items())
    ]
    stat_table = ProfileEventStat._meta.db_table
    with connection.cursor() as cursor:
        # Lock in id order first: concurrent batches touching the same profiles then queue instead
        # of deadlocking, and the locks are held only for the end of the transaction.
        cursor.execute(
            f"SELECT id FROM {Profile._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            [[d.profile_id for d in deltas]],
        )
        # Profiles and per-type stats in one statement: one round trip less while the locks are held.
        cursor.execute(
            "WITH upd AS ("
            + profile_update_sql(
                rows=f"jsonb_to_recordset(%s::jsonb) AS v(id bigint, {DELTA_TYPES})", where="p.id = v.id"
            )
            + f" RETURNING p.id) INSERT INTO {stat_table} "
            "(profile_id, event_type, count, value_sum, first_at, last_at) "
            "SELECT profile_id, event_type, count, value_sum, first_at, last_at FROM jsonb_to_recordset(%s::jsonb) AS "
            "r(profile_id bigint, event_type text, count bigint, value_sum numeric, first_at timestamptz, "
            "last_at timestamptz) ORDER BY profile_id, event_type" + stats_conflict_sql(),
            [_json(delta_rows), _json(stat_rows)],
        )


def _apply_orm(deltas: list[ProfileDelta]) -> None:
    gap = settings.INGEST_SESSION_GAP
    by_id = {d.profile_id: d for d in deltas}
    profiles = list(Profile.objects.select_for_update().filter(pk__in=by_id).order_by("pk"))
    for profile in profiles:
        d = by_id[profile.pk]
        new = profile.event_count == 0
        profile.session_count += sum(1 for s in d.session_starts if new or s > profile.last_seen_at + gap)
        if new or d.last_at >= profile.last_seen_at:
            profile.last_source_id = d.source_id
            for name in LAST_FIELDS:
                if d.last.get(name):
                    setattr(profile, f"last_{name}", d.last[name])
        profile.first_seen_at = d.first_at if new else min(profile.first_seen_at, d.first_at)
        profile.last_seen_at = d.last_at if new else max(profile.last_seen_at, d.last_at)
        profile.event_count += d.count
        profile.purchase_count += d.purchases
        profile.revenue = min(profile.revenue + d.revenue, SUM_MAX)
        profile.traits = {**profile.traits, **d.traits}
    Profile.objects.bulk_update(
        profiles,
        [
            "traits",
            "first_seen_at",
            "last_seen_at",
            "event_count",
            "session_count",
            "purchase_count",
            "revenue",
            "last_source",
            *(f"last_{name}" for name in LAST_FIELDS),
        ],
    )


def _json(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _stat_rows(stats: dict[tuple[int, str], list]) -> tuple[str, list]:
    """VALUES rows and parameters of per-type stats, in (profile, type) order: one lock order everywhere."""
    ops = connection.ops
    params: list = []
    for (profile_id, event_type), (count, value_sum, first_at, last_at) in sorted(stats.items()):
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
    return ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(stats)), params


def _stats_upsert(stats: dict[tuple[int, str], list]) -> None:
    rows, params = _stat_rows(stats)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ProfileEventStat._meta.db_table} (profile_id, event_type, count, value_sum, first_at, "
            f"last_at) VALUES {rows}" + stats_conflict_sql(),
            params,
        )

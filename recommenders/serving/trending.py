"""Trending items, overall or in a slice: a segment, a device type, a country, an hour band of the
visitor's local time, or any combination. One SQL statement per slice over recent events (decayed
by age, each visitor's weight per item capped, so one busy visitor cannot make an item trend),
consent-filtered like the interaction matrix, cached a few minutes in the cache and in the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from privacy.services.consent import consent_condition_sql, purposes
from recommenders.models import default_event_weights
from recommenders.serving import cache as serving_cache
from recommenders.serving.visitors import PURPOSE, band_hours
from tracking.models import Event, Source

_local = serving_cache.LocalMemo(serving_cache.TRENDING_LOCAL_TTL)
DEVICES = ("desktop", "mobile", "tablet")


@dataclass(frozen=True)
class Slice:
    """Which visitors' events count. Empty fields mean "any"."""

    segment: str = ""
    device: str = ""
    country: str = ""
    band: str = ""

    @property
    def key(self) -> str:
        return "|".join(
            f"{name}={value or '*'}"
            for name, value in (("seg", self.segment), ("dev", self.device), ("cc", self.country), ("hb", self.band))
        )

    @property
    def is_global(self) -> bool:
        return not (self.segment or self.device or self.country or self.band)

    def reason(self, segment_name: str = "") -> str:
        """What a visitor reads next to an item from this slice."""
        if self.segment:
            return f"trending in your segment {segment_name or self.segment}"
        parts = []
        if self.device:
            parts.append(f"on {self.device}")
        if self.country:
            parts.append(f"in {self.country}")
        if self.band:
            parts.append(f"in the {self.band}" if self.band != "night" else "at night")
        return "popular " + " ".join(parts) if parts else "trending now"


def _positive_weights() -> dict[str, float]:
    from recommenders.selectors import config_default

    config = config_default()
    weights = config.event_weights if config is not None else default_event_weights()
    return {
        str(t): float(w)
        for t, w in (weights or {}).items()
        if isinstance(w, int | float) and not isinstance(w, bool) and w > 0
    }


def _consent(alias: str) -> tuple[str, list]:
    purpose = purposes().get(PURPOSE)
    clauses, params = [], []
    for source in Source.objects.only("id", "consent_regime", "consent_policy_version"):
        condition, condition_params = consent_condition_sql(
            source=source, purpose=purpose, profile=f"{alias}.profile_id"
        )
        clauses.append(f"({alias}.source_id = %s AND {condition})")
        params.extend([source.pk, *condition_params])
    return ("(" + " OR ".join(clauses) + ")") if clauses else "FALSE", params


def _segment_sql(key: str) -> tuple[str, list] | None:
    from segments.selectors import segment_by_key, segment_members

    segment = segment_by_key(key=key)
    if segment is None:
        return None
    sql, params = segment_members(segment=segment).order_by().values("profile_id").query.sql_with_params()
    return f"e.profile_id IN ({sql})", list(params)


def trending_compute(*, slice_: Slice, depth: int) -> list[tuple[str, float]]:
    """(item, score) best first, straight from the database."""
    weights = _positive_weights()
    if not weights:
        return []
    now = timezone.now()
    start = now - timedelta(days=settings.RECOMMENDERS_TRENDING_DAYS)
    rate = math.log(2) / (settings.RECOMMENDERS_TRENDING_HALF_LIFE_DAYS * 86400.0)
    postgres = connection.vendor == "postgresql"
    table = Event._meta.db_table
    types = list(weights)
    if postgres:
        item = "COALESCE(e.properties->>'item_id', e.properties->>'product_id')"
        age = "EXTRACT(EPOCH FROM e.timestamp)"
        least = "LEAST"
    else:
        item = (
            "CAST(COALESCE(json_extract(e.properties, '$.item_id'), "
            "json_extract(e.properties, '$.product_id')) AS TEXT)"
        )
        age = "((julianday(e.timestamp) - 2440587.5) * 86400.0)"
        least = "MIN"
    where = [f"e.type IN ({', '.join(['%s'] * len(types))})", "e.timestamp >= %s", "e.timestamp <= %s"]
    params: list = [
        *types,
        connection.ops.adapt_datetimefield_value(start),
        connection.ops.adapt_datetimefield_value(now),
    ]
    if slice_.device:
        where.append("e.device_type = %s")
        params.append(slice_.device)
    if slice_.country:
        where.append("e.country = %s")
        params.append(slice_.country)
    if slice_.band and (hours := band_hours(slice_.band)):
        where.append("e.local_hour BETWEEN %s AND %s")
        params.extend(hours)
    if slice_.segment:
        segment = _segment_sql(slice_.segment)
        if segment is None:
            return []
        where.append(segment[0])
        params.extend(segment[1])
    consent, consent_params = _consent("e")
    where.append(consent)
    params.extend(consent_params)
    case = " ".join("WHEN %s THEN CAST(%s AS DOUBLE PRECISION)" for _ in types)
    case_params = [v for pair in weights.items() for v in pair]
    cap = max(weights.values())
    min_visitors = 1 if slice_.is_global else settings.RECOMMENDERS_TRENDING_MIN_VISITORS
    sql = f"""
        SELECT item, SUM(w) AS score FROM (
            SELECT e.profile_id, {item} AS item,
                   {least}(SUM((CASE e.type {case} ELSE 0 END)
                       * EXP(-CAST(%s AS DOUBLE PRECISION) * (CAST(%s AS DOUBLE PRECISION) - {age}))),
                       CAST(%s AS DOUBLE PRECISION)) AS w
            FROM {table} e
            WHERE {" AND ".join(where)}
            GROUP BY e.profile_id, {item}
        ) x
        WHERE item IS NOT NULL AND item <> ''
        GROUP BY item HAVING COUNT(*) >= %s
        ORDER BY score DESC, item
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*case_params, rate, now.timestamp(), cap, *params, min_visitors, depth])
        return [(str(item_id), float(score)) for item_id, score in cursor.fetchall() if score and score > 0]


def trending_items(*, slice_: Slice, depth: int | None = None) -> list[tuple[str, float]]:
    """Trending (item, score) of a slice: process memo, then the cache, then the database."""
    depth = depth or settings.RECOMMENDERS_TRENDING_DEPTH
    key = serving_cache.trending(slice_.key)
    found = _local.get(key)
    if found is None:
        found = serving_cache.safe_get(key)
        if found is None:
            found = trending_compute(slice_=slice_, depth=depth)
            serving_cache.safe_set(key, found, serving_cache.TRENDING_TTL)
        _local.set(key, found)
    return found[:depth]


def trending_forget() -> None:
    """Drop the process memo (tests, and the admin after a catalogue change)."""
    _local.clear()

"""Real-time evaluation of one profile against many segments, in one query.

Each segment's rule goes through the one compiler (scoped to the profile) and becomes
``Profile.objects.filter(pk=<id>).annotate(m=<compiled Q>)``; the segments' queries are sent together
as scalar subqueries of one SELECT. Building Django querysets for twenty rules costs far more than
running them, so on Postgres the SQL of each segment is compiled once per rule (and referenced
rules) with placeholder values for "now" and the profile id, and only the parameters are replaced
per call: every datetime parameter is "now" minus a fixed offset, and the profile id is the
placeholder. The SQL is exactly what the compiler produced for that rule.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper
from django.utils import timezone

from segments.compiler import RuleCycle, rule_compile
from segments.models import Segment, SegmentMembership
from segments.rules import RuleDeps, rule_dependencies, rule_segment_refs
from tracking.models import Profile

PLACEHOLDER_NOW = datetime(1800, 1, 1, tzinfo=UTC)
PLACEHOLDER_PROFILE = -7_777_777_777_771
CACHE_MAX = 2000


@dataclass
class ActiveSegment:
    id: int
    key: str
    rule: dict
    deps: RuleDeps = field(default_factory=RuleDeps)
    # Rules of the segments it refers to, directly or not (for compiling it without a database read).
    refs: dict[str, dict] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return json.dumps([self.rule, self.refs], sort_keys=True)


# Active segments, per process for a moment: the ingestion receiver and every refresh need them, and
# they change rarely. A change in this process forgets them at once (Segment saved or deleted); other
# processes see it within ACTIVE_SECONDS.
ACTIVE_SECONDS = 2.0
_active: dict[str, object] = {"until": 0.0, "segments": []}


def active_segments_forget(**kwargs) -> None:
    _active["until"] = 0.0


def active_segments() -> list[ActiveSegment]:
    """Active segments with their dependencies, those of referenced segments folded in (a segment
    inside another changes whenever its own inputs do)."""
    if _active["until"] < time.monotonic():
        _active.update(segments=_active_segments_load(), until=time.monotonic() + ACTIVE_SECONDS)
    return list(_active["segments"])  # type: ignore[arg-type]


def _active_segments_load() -> list[ActiveSegment]:
    rows = list(Segment.objects.values_list("id", "key", "rule", "status"))
    rules = {key: rule for _, key, rule, _ in rows}
    own = {key: rule_dependencies(rule) for key, rule in rules.items()}

    def reachable(key: str) -> set[str]:
        seen: set[str] = set()
        todo = [key]
        while todo:
            for ref in rule_segment_refs(rules.get(todo.pop()) or {}):
                if ref not in seen and ref != key:
                    seen.add(ref)
                    todo.append(ref)
        return seen

    active = []
    for pk, key, rule, status in rows:
        if status != Segment.Status.ACTIVE:
            continue
        refs = reachable(key)
        deps = own[key]
        total = RuleDeps(set(deps.event_types), deps.any_event, set(deps.segments), deps.time_based, set(deps.scores))
        for ref in refs:
            inner = own.get(ref, RuleDeps())
            total.event_types |= inner.event_types
            total.any_event |= inner.any_event
            total.time_based |= inner.time_based
            total.scores |= inner.scores
        active.append(ActiveSegment(pk, key, rule, total, {ref: rules[ref] for ref in sorted(refs) if ref in rules}))
    return active


_compiled: dict[str, tuple[str, tuple] | None] = {}


def _query(segment: ActiveSegment, now: datetime, profile_id: int) -> tuple[str, list] | None:
    """SQL and parameters of `Profile.objects.filter(pk=profile_id).annotate(m=<segment's rule>)`."""
    templated = connection.vendor == "postgresql"  # SQLite gets datetimes as text: compile per call
    key = segment.fingerprint
    if templated and key in _compiled:
        found = _compiled[key]
        if found is None:
            return None
        sql, params = found
        return sql, [
            now + (p - PLACEHOLDER_NOW)
            if isinstance(p, datetime)
            else (profile_id if p == PLACEHOLDER_PROFILE and type(p) is int else p)
            for p in params
        ]
    at, pid = (PLACEHOLDER_NOW, PLACEHOLDER_PROFILE) if templated else (now, profile_id)
    try:
        q = rule_compile(segment.rule, now=at, scope_profile_id=pid, segment_rules=segment.refs.get)
    except RuleCycle:
        found = None
    else:
        query = Profile.objects.filter(pk=pid).annotate(m=ExpressionWrapper(q, output_field=BooleanField()))
        sql, params = query.values("m").query.sql_with_params()
        found = (sql, tuple(params))
    if not templated:
        return (found[0], list(found[1])) if found else None
    if len(_compiled) >= CACHE_MAX:
        _compiled.clear()
    _compiled[key] = found
    return _query(segment, now, profile_id)


def profile_segments_evaluate(
    *, profile_id: int, segments: list[ActiveSegment], now: datetime | None = None
) -> dict[int, bool]:
    """Whether one profile matches each segment now, in one query; empty if the profile is gone."""
    return profile_segments_state(profile_id=profile_id, segments=segments, now=now)[0]


def profile_segments_state(
    *, profile_id: int, segments: list[ActiveSegment], now: datetime | None = None
) -> tuple[dict[int, bool], set[int]]:
    """(segment id -> matches now, ids of the segments it is a member of), in one round trip."""
    now = now or timezone.now()
    parts, params, ids = [], [], []
    for segment in segments:
        found = _query(segment, now, profile_id)
        if found is None:
            continue
        parts.append(f"({found[0]})")
        params.extend(found[1])
        ids.append(segment.id)
    if not parts:
        return {}, set()
    postgres = connection.vendor == "postgresql"
    members = SegmentMembership._meta.db_table
    collect = "array_agg(segment_id)" if postgres else "group_concat(segment_id)"
    parts.append(f"(SELECT {collect} FROM {members} WHERE profile_id = %s)")
    params.append(profile_id)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        row = cursor.fetchone()
    if row is None or row[0] is None:  # no such profile (erased, merged away)
        return {}, set()
    current = row[-1] or []
    if isinstance(current, str):
        current = current.split(",")
    return {sid: bool(v) for sid, v in zip(ids, row, strict=False)}, {int(c) for c in current}

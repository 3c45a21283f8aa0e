"""Real-time evaluation of one profile against many segments, in one query.

Each segment's rule goes through the one compiler (scoped to the profile) and becomes
``Profile.objects.filter(pk=<id>).annotate(m=<compiled Q>)``; the segments' queries are sent together
as scalar subqueries of one SELECT. Building Django querysets for twenty rules costs far more than
running them, so on Postgres the SQL of each segment is compiled once per rule (and referenced
rules) with placeholder values for "now" and the profile id, and only the parameters are replaced
per call: every datetime parameter is "now" minus a fixed offset, and the profile id is the
placeholder. The SQL is exactly what the compiler produced for that rule.

On Postgres the refresh (services/membership.py) wraps the same per-segment SQL, as rows of a VALUES
list (`profile_segments_matches_sql`), in one prepared statement that also writes the changes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

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

    @cached_property
    def fingerprint(self) -> str:
        # Computed once per loaded list (every ACTIVE_SECONDS), not once per refresh.
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


# A parameter of a compiled template: a constant, "now" plus an offset, or the profile id.
_CONST, _NOW, _PROFILE = 0, 1, 2


@dataclass(frozen=True)
class _Template:
    sql: str
    slots: tuple[tuple[int, object], ...]

    def params(self, now: datetime, profile_id: int) -> list:
        return [
            value if kind == _CONST else (now + value if kind == _NOW else profile_id)  # type: ignore[operator]
            for kind, value in self.slots
        ]


_compiled: dict[str, _Template | None] = {}


def _template(segment: ActiveSegment) -> _Template | None:
    """The compiled SQL of `Profile.objects.filter(pk=<id>).annotate(m=<segment's rule>)` with its
    parameters as slots (Postgres; compiled once per rule), None for a rule that refers to itself."""
    key = segment.fingerprint
    if key in _compiled:
        return _compiled[key]
    try:
        q = rule_compile(
            segment.rule, now=PLACEHOLDER_NOW, scope_profile_id=PLACEHOLDER_PROFILE, segment_rules=segment.refs.get
        )
    except RuleCycle:
        found = None
    else:
        query = Profile.objects.filter(pk=PLACEHOLDER_PROFILE).annotate(
            m=ExpressionWrapper(q, output_field=BooleanField())
        )
        sql, params = query.values("m").query.sql_with_params()
        slots = tuple(
            (_NOW, p - PLACEHOLDER_NOW)
            if isinstance(p, datetime)
            else ((_PROFILE, None) if type(p) is int and p == PLACEHOLDER_PROFILE else (_CONST, p))
            for p in params
        )
        found = _Template(sql, slots)
    if len(_compiled) >= CACHE_MAX:
        _compiled.clear()
    _compiled[key] = found
    return found


def _query(segment: ActiveSegment, now: datetime, profile_id: int) -> tuple[str, list] | None:
    """SQL and parameters of `Profile.objects.filter(pk=profile_id).annotate(m=<segment's rule>)`."""
    if connection.vendor == "postgresql":
        found = _template(segment)
        return (found.sql, found.params(now, profile_id)) if found else None
    # SQLite gets datetimes as text: compile per call.
    try:
        q = rule_compile(segment.rule, now=now, scope_profile_id=profile_id, segment_rules=segment.refs.get)
    except RuleCycle:
        return None
    query = Profile.objects.filter(pk=profile_id).annotate(m=ExpressionWrapper(q, output_field=BooleanField()))
    sql, params = query.values("m").query.sql_with_params()
    return sql, list(params)


def profile_segments_matches_sql(
    *, profile_id: int, segments: list[ActiveSegment], now: datetime
) -> tuple[str, list, list[int]]:
    """``VALUES (<segment id>, (<compiled rule of that segment for the profile>)), ...``: one row per
    segment with whether the profile matches it (NULL when the profile is gone), for the one statement
    of the real-time refresh (services/membership.py). The SQL of each segment is `_query`'s, the one
    `profile_segments_evaluate` runs. Returns (sql, params, ids of the segments in it); sql is empty
    when no segment can be evaluated."""
    rows, params, ids = [], [], []
    for segment in segments:
        found = _query(segment, now, profile_id)
        if found is None:
            continue
        rows.append(f"({int(segment.id)}, ({found[0]}))")
        params.extend(found[1])
        ids.append(segment.id)
    return (f"VALUES {', '.join(rows)}" if rows else ""), params, ids


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

"""The one rule compiler: a rule tree becomes one Django ``Q`` over ``tracking.Profile``.

Both the batch recompute (``Profile.objects.filter(q)``) and the real-time check of one profile
(``Profile.objects.filter(pk=pid)`` with ``q`` as a boolean column, see services/realtime.py) run
what this module returns, so they cannot disagree.

Shape of the SQL, chosen so one form is fast both for a million profiles and for one:
- behaviour is set-based: ``id IN (SELECT profile_id FROM event WHERE ... GROUP BY profile_id HAVING
  ...)`` (a hash semi-join in bulk). A condition that also holds for profiles with no matching event
  (``purchase count = 0``, ``count < 3``) is written as the negation of the set of those where it
  fails, so profiles without any row are counted right. "Ever" windows read the per-type aggregates
  (ProfileEventStat) instead of raw events. Windowed counts and sums inside one ``all`` group share
  one pass over the events (``HAVING count(*) FILTER (WHERE ...) >= 1 AND ...``).
- ``scope_profile_id`` adds ``profile_id = <id>`` inside those subqueries. It is logically redundant
  under ``filter(pk=id)`` (same answer, proven by the property test) and lets the real-time path
  read a handful of index entries instead of aggregating every profile.
- every condition evaluates to true or false, never SQL NULL, so ``not`` and negative operators are
  exact complements (a missing trait is "not equal" to anything).

Negative operators are the complements of positive ones: ``neq`` = not ``eq``, ``not_in`` = not
``in``, ``not_exists`` = not ``exists``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import BooleanField, Count, F, FloatField, Func, OuterRef, Q, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
)

from segments.rules import CONTEXT_FIELDS

NEGATIVE = {"neq": "eq", "not_in": "in", "not_exists": "exists"}
NOTHING = Q(pk__in=[])
DAY = timedelta(days=1)
CONTEXT_COLUMNS = {
    "device_type": "last_device_type",
    "os": "last_os",
    "browser": "last_browser",
    "country": "last_country",
    "traffic_source": "last_traffic_source",
}
PROFILE_COLUMNS = {
    "event_count": "event_count",
    "session_count": "session_count",
    "purchase_count": "purchase_count",
    "revenue": "revenue",
    "days_since_last_visit": "last_seen_at",
    "days_since_first_visit": "first_seen_at",
}

SegmentRules = Callable[[str], dict | None]


class RuleCycle(ValueError):
    """A segment refers (directly or through others) to itself."""


def rule_compile(
    rule: dict,
    *,
    now: datetime,
    scope_profile_id: int | None = None,
    segment_rules: SegmentRules | None = None,
    merge: bool = True,
) -> Q:
    """The Q selecting the profiles a (valid) rule matches at ``now``. ``segment_rules(key)`` gives the
    rule of a referenced segment (default: read from the database); an unknown segment matches nobody.
    ``merge=False`` compiles each windowed event condition of an ``all`` group on its own (the same
    answer, proven by a property test; merging reads the events once instead of once per condition)."""
    compiler = _Compiler(now, scope_profile_id, segment_rules or _segment_rule_from_db)
    compiler.merge = merge
    return compiler.node(rule, ())


def _segment_rule_from_db(key: str) -> dict | None:
    from segments.models import Segment

    return Segment.objects.filter(key=key).values_list("rule", flat=True).first()


class _Compiler:
    merge = True

    def __init__(self, now: datetime, scope: int | None, segment_rules: SegmentRules) -> None:
        self.now = now
        self.scope = scope
        self.segment_rules = segment_rules

    # -- tree ---------------------------------------------------------------------------------
    def node(self, node: dict, stack: tuple[str, ...]) -> Q:
        if "all" in node:
            q, rest = self._merged_events(node["all"]) if self.merge else (Q(), node["all"])
            for child in rest:
                q &= self.node(child, stack)
            return q
        if "any" in node:
            q = NOTHING
            for index, child in enumerate(node["any"]):
                q = self.node(child, stack) if index == 0 else q | self.node(child, stack)
            return q
        if "not" in node:
            return ~self.node(node["not"], stack)
        op = node.get("op")
        if op in NEGATIVE:
            return ~self.condition({**node, "op": NEGATIVE[op]}, stack)
        return self.condition(node, stack)

    def condition(self, cond: dict, stack: tuple[str, ...]) -> Q:
        return getattr(self, f"c_{cond['kind']}")(cond, stack)

    def _mergeable(self, cond: dict) -> bool:
        """A positive count, or sum of the event value, over a window: read from raw events."""
        return (
            cond.get("kind") == "event"
            and cond.get("measure", "count") in ("count", "sum")
            and "property" not in cond
            and cond.get("within") is not None
            and cond.get("op") not in NEGATIVE
        )

    def _merged_events(self, children: list) -> tuple[Q, list]:
        """The windowed event conditions of an ``all`` group as ONE grouped pass over the events:
        ``id IN (SELECT profile_id ... GROUP BY profile_id HAVING count(*) FILTER (...) >= 1 AND ...)``,
        as one would write it by hand. Valid when one of them fails for a profile without events (so
        every match has rows in the group, and the conditions that hold at zero are decided by HAVING
        on those rows); otherwise, or with fewer than two, nothing is merged."""
        from tracking.models import Event

        merged = [c for c in children if isinstance(c, dict) and self._mergeable(c)]
        specs = [
            (c, "gt" if c["op"] == "exists" else c["op"], 0 if c["op"] == "exists" else c["value"]) for c in merged
        ]
        if len(merged) < 2 or all(self._holds_at_zero(op, value) for _, op, value in specs):
            return Q(), children
        widest = max(c["within"] for c in merged)
        events = Event.objects.filter(timestamp__gte=self.now - widest * DAY)
        types = {c["event"] for c in merged}
        if "*" not in types:
            events = events.filter(type__in=sorted(types))
        measures, having = {}, Q()
        for index, (cond, op, value) in enumerate(specs):
            # Only what the WHERE above does not already say (the widest window, a single event type):
            # a FILTER is evaluated on every row of the pass (a bare count(*) needs none).
            only = Q()
            if cond["within"] != widest:
                only &= Q(timestamp__gte=self.now - cond["within"] * DAY)
            if cond["event"] != "*" and types != {cond["event"]}:
                only &= Q(type=cond["event"])
            filtered = {"filter": only} if only else {}
            name = f"m{index}"
            if cond.get("measure", "count") == "count":
                measures[name] = Count("id", **filtered) if only else Count("*")
            else:
                measures[name] = Coalesce(Sum("value", **filtered), Value(0), output_field=FloatField())
            having &= self._value_q(name, op, value)
        grouped = events.values("profile_id").annotate(**measures).filter(having)
        return self._ids(grouped), [c for c in children if not (isinstance(c, dict) and self._mergeable(c))]

    # -- helpers ------------------------------------------------------------------------------
    def _scoped(self, qs):
        return qs.filter(profile_id=self.scope) if self.scope is not None else qs

    def _ids(self, qs) -> Q:
        return Q(pk__in=self._scoped(qs).values("profile_id"))

    @staticmethod
    def _value_q(name: str, op: str, value: Any) -> Q:
        """A positive comparison of a non-null column (or annotation) with a value."""
        if op == "eq":
            return Q(**{name: value})
        if op == "in":
            return Q(**{f"{name}__in": value})
        if op == "between":
            return Q(**{f"{name}__gte": value[0], f"{name}__lte": value[1]})
        if op in ("gt", "gte", "lt", "lte"):
            return Q(**{f"{name}__{op}": value})
        if op == "contains":
            return Q(**{f"{name}__icontains": value})
        if op == "starts_with":
            return Q(**{f"{name}__istartswith": value})
        raise ValueError(f"operator {op} does not apply to {name}")

    @staticmethod
    def _holds_at_zero(op: str, value: Any) -> bool:
        if op == "eq":
            return value == 0
        if op == "in":
            return 0 in value
        if op == "between":
            return value[0] <= 0 <= value[1]
        return {"gt": value < 0, "gte": value <= 0, "lt": value > 0, "lte": value >= 0}[op]

    def _aggregate(self, grouped, column: str, op: str, value: Any) -> Q:
        """Profiles whose aggregate (0 when they have no row) satisfies op/value; `grouped` is a
        queryset of (profile_id, <column>) with one row per profile having any."""
        if op == "exists":
            op, value = "gt", 0
        if self._holds_at_zero(op, value):
            return ~self._ids(grouped.exclude(self._value_q(column, op, value)))
        return self._ids(grouped.filter(self._value_q(column, op, value)))

    def _days(self, column: str, op: str, value: Any) -> Q:
        """Whole days elapsed since a timestamp column, d = floor((now - t) / 1 day), as ranges of t."""
        now = self.now

        def at_least(n: int) -> Q:  # d >= n
            return Q(**{f"{column}__lte": now - n * DAY})

        def at_most(n: int) -> Q:  # d <= n
            return Q(**{f"{column}__gt": now - (n + 1) * DAY})

        if op == "exists":
            return Q(**{f"{column}__isnull": False})
        if op == "gte":
            return at_least(int(value))
        if op == "gt":
            return at_least(int(value) + 1)
        if op == "lte":
            return at_most(int(value))
        if op == "lt":
            return at_most(int(value) - 1)
        if op == "eq":
            return at_least(int(value)) & at_most(int(value))
        if op == "between":
            return at_least(int(value[0])) & at_most(int(value[1]))
        if op == "in":
            q = NOTHING
            for n in value:
                q |= at_least(int(n)) & at_most(int(n))
            return q
        raise ValueError(f"operator {op} does not apply to days")

    # -- conditions ---------------------------------------------------------------------------
    def c_trait(self, cond: dict, stack) -> Q:
        return Q(TraitTest(cond["name"], cond["op"], cond.get("value")))

    def c_profile(self, cond: dict, stack) -> Q:
        column = PROFILE_COLUMNS[cond["field"]]
        op, value = cond["op"], cond.get("value")
        if cond["field"].startswith("days_since"):
            return self._days(column, op, value)
        if op == "exists":
            return Q(**{f"{column}__gt": 0})
        return self._value_q(column, op, value)

    def c_context(self, cond: dict, stack) -> Q:
        field, op, value = cond["field"], cond["op"], cond.get("value")
        if CONTEXT_FIELDS[field]["type"] == "string":
            column = CONTEXT_COLUMNS[field]
            if op == "exists":
                return ~Q(**{column: ""})
            return self._value_q(column, op, value)
        # Local hour and weekday are per event: those of the profile's latest event.
        from tracking.models import Event

        latest = Subquery(
            Event.objects.filter(profile_id=OuterRef("pk")).order_by("-timestamp", "-id").values(field)[:1]
        )
        if op == "exists":
            return Q(IsNull(latest, False))
        if op == "between":
            return _safe(GreaterThanOrEqual(latest, value[0])) & _safe(LessThanOrEqual(latest, value[1]))
        return _safe(_lookup(latest, op, value))

    def c_event(self, cond: dict, stack) -> Q:
        from tracking.models import Event, ProfileEventStat

        event_type = cond["event"]
        measure = cond.get("measure", "count")
        within = cond.get("within")
        op, value = cond["op"], cond.get("value")
        any_type = event_type == "*"

        if measure in ("days_since_last", "days_since_first"):
            if any_type:
                return self._days("last_seen_at" if measure == "days_since_last" else "first_seen_at", op, value)
            column = "last_at" if measure == "days_since_last" else "first_at"
            stats = ProfileEventStat.objects.filter(event_type=event_type)
            if op == "exists":
                return self._ids(stats)
            return self._ids(stats.filter(self._days(column, op, value)))

        if within is None and measure == "count" and any_type:
            return self._aggregate_profile_column("event_count", op, value)
        if within is None and not cond.get("property"):
            # Lifetime count or value sum: the per-type aggregates kept at ingest.
            stats = ProfileEventStat.objects.all()
            if not any_type:
                stats = stats.filter(event_type=event_type)
            column = "count" if measure == "count" else "value_sum"
            if any_type:
                grouped = stats.values("profile_id").annotate(m=Sum(column)).values("profile_id", "m")
                return self._aggregate(grouped, "m", op, value)
            return self._aggregate(stats.values("profile_id", column), column, op, value)

        events = Event.objects.all() if any_type else Event.objects.filter(type=event_type)
        if within is not None:
            events = events.filter(timestamp__gte=self.now - within * DAY)
        if measure == "count":
            aggregate = Count("id")
        elif cond.get("property"):
            events = events.filter(JsonIsNumber("properties", cond["property"]))
            aggregate = Sum(Cast(KeyTextTransform(cond["property"], "properties"), FloatField()))
        else:
            aggregate = Coalesce(Sum("value"), Value(0), output_field=FloatField())
        grouped = events.values("profile_id").annotate(m=aggregate).values("profile_id", "m")
        return self._aggregate(grouped, "m", op, value)

    def _aggregate_profile_column(self, column: str, op: str, value: Any) -> Q:
        if op == "exists":
            return Q(**{f"{column}__gt": 0})
        return self._value_q(column, op, value)

    def c_consent(self, cond: dict, stack) -> Q:
        from privacy.models import ConsentState

        states = ConsentState.objects.filter(purpose__key=cond["purpose"])
        if cond["state"] == "granted":
            return self._ids(states.filter(granted=True))
        if cond["state"] == "denied":
            return self._ids(states.filter(granted=False))
        return ~self._ids(states)

    def c_segment(self, cond: dict, stack: tuple[str, ...]) -> Q:
        key = cond["segment"]
        if key in stack:
            raise RuleCycle(f"segment {key} refers to itself through {' -> '.join((*stack, key))}")
        rule = self.segment_rules(key)
        if not rule:
            return NOTHING
        return self.node(rule, (*stack, key))

    def c_score(self, cond: dict, stack) -> Q:
        from segments.models import ProfileScore

        scores = ProfileScore.objects.filter(name=cond["name"])
        op, value = cond["op"], cond.get("value")
        if cond.get("field", "value") == "label":
            if op == "exists":
                return self._ids(scores.exclude(label=""))
            return self._ids(scores.filter(self._value_q("label", op, value)))
        scores = scores.filter(value__isnull=False)
        if op == "exists":
            return self._ids(scores)
        return self._ids(scores.filter(self._value_q("value", op, value)))


def _safe(lookup) -> Q:
    """A lookup on a value that may be NULL (no event), as a condition that is false instead."""
    return Q(Coalesce(lookup, Value(False), output_field=BooleanField()))


def _lookup(lhs, op: str, value: Any):
    if op == "eq":
        return Exact(lhs, value)
    if op == "in":
        return In(lhs, list(value))
    return {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}[op](lhs, value)


class JsonIsNumber(Func):
    """True when a top-level key of a JSON column holds a number (so casting it cannot fail)."""

    output_field = BooleanField()

    def __init__(self, column: str, key: str) -> None:
        super().__init__(F(column))
        self.key = key

    def as_sql(self, compiler, connection, **extra):
        col, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            return f"COALESCE(jsonb_typeof({col} -> %s) = 'number', false)", [*params, self.key]
        return f"COALESCE(json_type({col}, %s) IN ('integer', 'real'), 0)", [*params, _sqlite_path(self.key)]


def _sqlite_path(key: str) -> str:
    return '$."' + key.replace('"', "") + '"'


def _like_escape(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class TraitTest(Func):
    """A positive comparison of one trait (top-level key of Profile.traits) with a value; true or false,
    never NULL. Strict about types: the trait "30" (a string) is not the number 30, and order
    operators compare numbers with numbers and strings with strings (byte order)."""

    output_field = BooleanField()

    def __init__(self, name: str, op: str, value: Any) -> None:
        super().__init__(F("traits"))
        self.name, self.op, self.value = name, op, value

    def as_sql(self, compiler, connection, **extra):
        col, params = compiler.compile(self.source_expressions[0])
        pg = connection.vendor == "postgresql"
        sql, more = (self._postgres if pg else self._sqlite)(col)
        false = "false" if pg else "0"
        return f"COALESCE(({sql}), {false})", [*params, *more]

    # Postgres: jsonb operators; numbers compare as numeric, strings in "C" (byte) order.
    def _postgres(self, col: str) -> tuple[str, list]:
        name, op, value = self.name, self.op, self.value
        j, t = f"({col} -> %s)", f"jsonb_typeof({col} -> %s)"
        if op == "exists":
            return f"{t} <> 'null'", [name]
        if op in ("eq", "in"):
            values = [value] if op == "eq" else list(value)
            marks = ", ".join(["%s::jsonb"] * len(values))
            return f"{j} IN ({marks})", [name, *[json.dumps(v) for v in values]]
        if op in ("contains", "starts_with"):
            pattern = ("%" if op == "contains" else "") + _like_escape(value) + "%"
            return (
                f"CASE WHEN {t} = 'string' THEN lower({col} ->> %s) END LIKE %s ESCAPE '\\'",
                [name, name, pattern],
            )
        numeric = not isinstance(value[0] if op == "between" else value, str)
        typed = (
            f"CASE WHEN {t} = 'number' THEN ({col} ->> %s)::numeric END"
            if numeric
            else f"CASE WHEN {t} = 'string' THEN ({col} ->> %s) COLLATE \"C\" END"
        )
        return _order_sql(typed, op, value, [name, name])

    # SQLite: json_type/json_extract; booleans are 'true'/'false' types, numbers integer/real.
    def _sqlite(self, col: str) -> tuple[str, list]:
        name, op, value = self.name, self.op, self.value
        path = _sqlite_path(name)
        t, x = f"json_type({col}, %s)", f"json_extract({col}, %s)"
        if op == "exists":
            return f"{t} <> 'null'", [path]
        if op in ("eq", "in"):
            parts, params = [], []
            for v in [value] if op == "eq" else list(value):
                if isinstance(v, bool):
                    parts.append(f"{t} = %s")
                    params += [path, "true" if v else "false"]
                elif isinstance(v, str):
                    parts.append(f"({t} = 'text' AND {x} = %s)")
                    params += [path, path, v]
                else:
                    parts.append(f"({t} IN ('integer', 'real') AND {x} = %s)")
                    params += [path, path, v]
            return " OR ".join(parts), params
        if op in ("contains", "starts_with"):
            pattern = ("%" if op == "contains" else "") + _like_escape(value) + "%"
            return f"CASE WHEN {t} = 'text' THEN lower({x}) END LIKE %s ESCAPE '\\'", [path, path, pattern]
        numeric = not isinstance(value[0] if op == "between" else value, str)
        kinds = "('integer', 'real')" if numeric else "('text')"
        return _order_sql(f"CASE WHEN {t} IN {kinds} THEN {x} END", op, value, [path, path])


def _order_sql(typed: str, op: str, value: Any, params: list) -> tuple[str, list]:
    if op == "between":
        return f"{typed} BETWEEN %s AND %s", [*params, value[0], value[1]]
    sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return f"{typed} {sign} %s", [*params, value]

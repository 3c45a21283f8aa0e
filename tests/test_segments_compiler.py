"""The rule compiler, operator by operator, against answers worked out by hand on five profiles; and the
real-time form (one profile, scoped subqueries) agreeing with the batch form on each of them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from privacy.models import ConsentState, Purpose
from segments.compiler import rule_compile
from segments.models import ProfileScore, Segment
from segments.services.realtime import ActiveSegment, profile_segments_evaluate
from tracking.models import Event, Profile, ProfileEventStat

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def make_profile(
    source,
    *,
    traits: dict | None = None,
    events: list[dict] = (),
    sessions: int = 1,
    device: str = "",
    country: str = "",
    traffic: str = "",
    first_seen_days: float | None = None,
    now: datetime = NOW,
) -> Profile:
    """A profile with its events and the aggregates ingestion would have kept for them. Each event is
    {"type", "days" (ago), optional "value", "properties", "local_hour"}."""
    stamps = [now - timedelta(days=e["days"]) for e in events]
    first = min(stamps) if stamps else now - timedelta(days=first_seen_days or 0)
    if first_seen_days is not None:
        first = now - timedelta(days=first_seen_days)
    last = max(stamps) if stamps else first
    purchases = [e for e in events if e["type"] == "purchase"]
    profile = Profile.objects.create(
        traits=traits or {},
        first_seen_at=first,
        last_seen_at=last,
        event_count=len(events),
        session_count=sessions,
        purchase_count=len(purchases),
        revenue=sum((Decimal(str(e.get("value") or 0)) for e in purchases), Decimal(0)),
        last_device_type=device,
        last_country=country,
        last_traffic_source=traffic,
    )
    Event.objects.bulk_create(
        Event(
            source=source,
            profile=profile,
            message_id=uuid.uuid4().hex,
            type=e["type"],
            timestamp=stamp,
            received_at=stamp,
            properties=e.get("properties", {}),
            value=None if e.get("value") is None else Decimal(str(e["value"])),
            local_hour=e.get("local_hour"),
        )
        for e, stamp in zip(events, stamps, strict=True)
    )
    stats: dict[str, list] = {}
    for e, stamp in zip(events, stamps, strict=True):
        stat = stats.setdefault(e["type"], [0, Decimal(0), stamp, stamp])
        stat[0] += 1
        stat[1] += Decimal(str(e.get("value") or 0))
        stat[2], stat[3] = min(stat[2], stamp), max(stat[3], stamp)
    ProfileEventStat.objects.bulk_create(
        ProfileEventStat(profile=profile, event_type=t, count=c, value_sum=v, first_at=f, last_at=la)
        for t, (c, v, f, la) in stats.items()
    )
    return profile


@pytest.fixture
def people(source):
    alice = make_profile(
        source,
        traits={"country": "FR", "age": 30, "plan": "plus", "vip": True, "name": "Alice Martin"},
        events=[
            {"type": "add_to_cart", "days": 2},
            {"type": "add_to_cart", "days": 3},
            {"type": "purchase", "days": 40, "value": 600, "properties": {"revenue": 600, "items": 3}},
            {"type": "page_view", "days": 1.5, "local_hour": 9},
        ],
        sessions=4,
        device="mobile",
        country="FR",
        traffic="email",
    )
    bob = make_profile(
        source,
        traits={"country": "DE", "age": 25, "plan": None},
        events=[
            {"type": "add_to_cart", "days": 1},
            {"type": "purchase", "days": 1, "value": 20, "properties": {"revenue": 20, "items": "two"}},
            {"type": "page_view", "days": 0.5, "local_hour": 14},
        ],
        sessions=2,
        device="desktop",
        country="DE",
        traffic="organic_search",
    )
    carol = make_profile(
        source,
        traits={"country": "US", "age": "34"},
        events=[{"type": "page_view", "days": 45, "local_hour": 22}],
        device="desktop",
        country="US",
        traffic="direct",
    )
    dan = make_profile(source, traits={}, events=[], first_seen_days=2)
    eve = make_profile(
        source,
        traits={"age": 40.5, "name": "eve_50%"},
        events=[{"type": "product_view", "days": d} for d in (1, 2, 3, 4, 5, 9)],
        sessions=3,
        device="tablet",
    )
    return {"alice": alice, "bob": bob, "carol": carol, "dan": dan, "eve": eve}


def matching(people, rule, now=NOW) -> set[str]:
    names = {p.pk: name for name, p in people.items()}
    ids = Profile.objects.filter(rule_compile(rule, now=now)).values_list("pk", flat=True)
    return {names[pk] for pk in ids if pk in names}


def trait(name, op, value=None):
    return {"kind": "trait", "name": name, "op": op, **({} if value is None else {"value": value})}


def ev(event, op, value=None, **extra):
    return {"kind": "event", "event": event, "op": op, **({} if value is None else {"value": value}), **extra}


CASES = [
    # traits
    (trait("country", "eq", "FR"), {"alice"}),
    (trait("country", "neq", "FR"), {"bob", "carol", "dan", "eve"}),  # missing counts as not equal
    (trait("country", "in", ["FR", "DE"]), {"alice", "bob"}),
    (trait("country", "not_in", ["FR", "DE"]), {"carol", "dan", "eve"}),
    (trait("age", "gt", 25), {"alice", "eve"}),  # carol's "34" is a string, not a number
    (trait("age", "gte", 25), {"alice", "bob", "eve"}),
    (trait("age", "lt", 30), {"bob"}),
    (trait("age", "lte", 30), {"alice", "bob"}),
    (trait("age", "between", [25, 34]), {"alice", "bob"}),
    (trait("age", "eq", 40.5), {"eve"}),
    (trait("age", "eq", "34"), {"carol"}),
    (trait("plan", "exists"), {"alice"}),  # bob's plan is null: not set
    (trait("plan", "not_exists"), {"bob", "carol", "dan", "eve"}),
    (trait("vip", "eq", True), {"alice"}),
    (trait("name", "contains", "MARTIN"), {"alice"}),
    (trait("name", "contains", "50%"), {"eve"}),  # LIKE wildcards in the value are literal
    (trait("name", "starts_with", "ali"), {"alice"}),
    (trait("country", "gte", "F"), {"alice", "carol"}),  # strings compare with strings
    # behaviour
    (ev("add_to_cart", "gte", 2, within=7), {"alice"}),
    (ev("add_to_cart", "gte", 1, within=7), {"alice", "bob"}),
    (ev("purchase", "eq", 0, within=30), {"alice", "carol", "dan", "eve"}),
    (ev("purchase", "eq", 0), {"carol", "dan", "eve"}),
    (ev("purchase", "lt", 1, within=7), {"alice", "carol", "dan", "eve"}),
    (ev("product_view", "between", [5, 10], within=7), {"eve"}),
    (ev("product_view", "between", [0, 5], within=7), {"alice", "bob", "carol", "dan", "eve"}),
    (ev("product_view", "in", [0, 6]), {"alice", "bob", "carol", "dan", "eve"}),
    (ev("product_view", "neq", 6), {"alice", "bob", "carol", "dan"}),
    (ev("purchase", "exists", within=30), {"bob"}),
    (ev("purchase", "not_exists"), {"carol", "dan", "eve"}),
    (ev("purchase", "gte", 500, measure="sum"), {"alice"}),
    (ev("purchase", "gte", 500, measure="sum", within=30), set()),
    (ev("purchase", "gte", 3, measure="sum", property="items"), {"alice"}),  # bob's "two" is not a number
    (ev("purchase", "lt", 100, measure="sum", property="revenue"), {"bob", "carol", "dan", "eve"}),
    (ev("*", "gte", 4, within=7), {"eve"}),
    (ev("*", "gte", 4), {"alice", "eve"}),
    (ev("purchase", "gt", 30, measure="days_since_last"), {"alice"}),
    (ev("purchase", "lte", 30, measure="days_since_last"), {"bob"}),
    (ev("page_view", "eq", 1, measure="days_since_last"), {"alice"}),  # 1.5 days ago: 1 whole day
    (ev("page_view", "in", [0, 45], measure="days_since_first"), {"bob", "carol"}),
    (ev("*", "gt", 30, measure="days_since_last"), {"carol"}),
    # profile aggregates
    ({"kind": "profile", "field": "days_since_last_visit", "op": "gt", "value": 30}, {"carol"}),
    ({"kind": "profile", "field": "days_since_first_visit", "op": "lt", "value": 7}, {"bob", "dan"}),
    ({"kind": "profile", "field": "session_count", "op": "gte", "value": 3}, {"alice", "eve"}),
    ({"kind": "profile", "field": "revenue", "op": "between", "value": [10, 100]}, {"bob"}),
    # last context
    ({"kind": "context", "field": "device_type", "op": "eq", "value": "desktop"}, {"bob", "carol"}),
    ({"kind": "context", "field": "device_type", "op": "exists"}, {"alice", "bob", "carol", "eve"}),
    ({"kind": "context", "field": "traffic_source", "op": "in", "value": ["email", "direct"]}, {"alice", "carol"}),
    ({"kind": "context", "field": "country", "op": "neq", "value": "FR"}, {"bob", "carol", "dan", "eve"}),
    ({"kind": "context", "field": "local_hour", "op": "gte", "value": 12}, {"bob", "carol"}),
    ({"kind": "context", "field": "local_hour", "op": "lt", "value": 12}, {"alice"}),  # eve's events have no hour
    ({"kind": "context", "field": "local_hour", "op": "not_exists"}, {"dan", "eve"}),
    ({"kind": "context", "field": "local_hour", "op": "between", "value": [9, 14]}, {"alice", "bob"}),
    # groups
    (
        {"all": [ev("add_to_cart", "gte", 1, within=7), ev("purchase", "eq", 0, within=7)]},
        {"alice"},
    ),
    ({"any": [trait("country", "eq", "US"), trait("age", "gt", 40)]}, {"carol", "eve"}),
    ({"not": {"any": [trait("country", "eq", "US"), trait("age", "gt", 40)]}}, {"alice", "bob", "dan"}),
    ({"not": trait("plan", "exists")}, {"bob", "carol", "dan", "eve"}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("rule", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_operator_matches_the_hand_computed_profiles(people, rule, expected):
    assert matching(people, rule) == expected
    # The real-time form, one profile at a time with scoped subqueries, gives the same answer.
    one = ActiveSegment(1, "s", rule)
    alone = {
        name
        for name, profile in people.items()
        if profile_segments_evaluate(profile_id=profile.pk, segments=[one], now=NOW).get(1)
    }
    assert alone == expected


@pytest.mark.django_db
def test_consent_conditions_read_the_current_consent_state(people):
    marketing = Purpose.objects.get(key="marketing")
    ConsentState.objects.create(profile=people["alice"], purpose=marketing, granted=True, origin="banner")
    ConsentState.objects.create(profile=people["bob"], purpose=marketing, granted=False, origin="banner")
    consent = {"kind": "consent", "purpose": "marketing"}
    assert matching(people, {**consent, "state": "granted"}) == {"alice"}
    assert matching(people, {**consent, "state": "denied"}) == {"bob"}
    assert matching(people, {**consent, "state": "unset"}) == {"carol", "dan", "eve"}


@pytest.mark.django_db
def test_score_conditions_compare_values_and_labels(people):
    for name, risk, label in (("alice", 0.9, "frequent high spenders"), ("bob", 0.2, "new customers")):
        ProfileScore.objects.create(profile=people[name], name="churn_risk", value=risk, computed_at=NOW)
        ProfileScore.objects.create(profile=people[name], name="rfm_segment", label=label, computed_at=NOW)
    assert matching(people, {"kind": "score", "name": "churn_risk", "op": "gte", "value": 0.7}) == {"alice"}
    assert matching(people, {"kind": "score", "name": "churn_risk", "op": "lt", "value": 0.7}) == {"bob"}
    assert matching(people, {"kind": "score", "name": "churn_risk", "op": "not_exists"}) == {"carol", "dan", "eve"}
    label = {"kind": "score", "name": "rfm_segment", "field": "label"}
    assert matching(people, {**label, "op": "in", "value": ["new customers"]}) == {"bob"}
    assert matching(people, {**label, "op": "contains", "value": "HIGH"}) == {"alice"}


@pytest.mark.django_db
def test_segment_conditions_follow_the_referenced_rule_and_unknown_ones_match_nobody(people):
    Segment.objects.create(key="french", name="French", rule=trait("country", "eq", "FR"))
    Segment.objects.create(
        key="french-carts",
        name="x",
        rule={"all": [{"kind": "segment", "segment": "french"}, ev("add_to_cart", "gte", 1)]},
    )
    assert matching(people, {"kind": "segment", "segment": "french-carts"}) == {"alice"}
    assert matching(people, {"not": {"kind": "segment", "segment": "french"}}) == {"bob", "carol", "dan", "eve"}
    assert matching(people, {"kind": "segment", "segment": "gone"}) == set()


@pytest.mark.django_db
def test_windows_move_with_the_now_passed_in(people):
    rule = ev("add_to_cart", "gte", 2, within=7)
    assert matching(people, rule, now=NOW) == {"alice"}
    assert matching(people, rule, now=NOW + timedelta(days=4, hours=1)) == set()  # the older cart fell out
    assert matching(
        people,
        {"kind": "profile", "field": "days_since_last_visit", "op": "gt", "value": 30},
        now=NOW + timedelta(days=31),
    ) == {"alice", "bob", "carol", "dan", "eve"}

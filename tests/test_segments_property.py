"""Property: for random rule trees over random profiles and events, the real-time membership of each
profile equals the batch membership (the recompute's stored members), and every generated rule is
accepted by both the validator and the JSON Schema."""

from __future__ import annotations

import jsonschema
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.models import Segment, SegmentMembership
from segments.rules import RULE_SCHEMA, rule_validate
from segments.services.membership import segment_recompute
from segments.services.realtime import ActiveSegment, profile_segments_evaluate
from tests.test_segments_compiler import NOW, make_profile

EVENT_TYPES = ["page_view", "add_to_cart", "purchase", "product_view"]

scalar_trait = st.one_of(
    st.sampled_from(["FR", "DE", "US", "plus", "free", "30"]),
    st.integers(min_value=15, max_value=70),
    st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda x: round(x, 2)),
    st.booleans(),
    st.none(),
)
traits = st.dictionaries(st.sampled_from(["country", "age", "plan", "vip"]), scalar_trait, max_size=4)
event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(EVENT_TYPES),
        "days": st.floats(min_value=0, max_value=60, allow_nan=False).map(lambda x: round(x, 3)),
    },
    optional={
        "value": st.integers(min_value=0, max_value=400),
        "properties": st.one_of(
            st.fixed_dictionaries({"revenue": st.integers(min_value=0, max_value=400)}),
            st.just({"revenue": "n/a"}),
        ),
        "local_hour": st.integers(min_value=0, max_value=23),
    },
)
profile = st.fixed_dictionaries(
    {
        "traits": traits,
        "events": st.lists(event, max_size=8),
        "sessions": st.integers(min_value=0, max_value=5),
        "device": st.sampled_from(["", "mobile", "desktop"]),
        "country": st.sampled_from(["", "FR", "DE"]),
        "first_seen_days": st.one_of(st.none(), st.integers(min_value=0, max_value=90)),
    }
)

small = st.integers(min_value=0, max_value=6)


def number_op(values):
    return st.one_of(
        st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), values),
        st.tuples(st.sampled_from(["in", "not_in"]), st.lists(values, min_size=1, max_size=3)),
        st.tuples(st.just("between"), st.tuples(values, values).map(lambda p: sorted(p))),
    )


def with_op(base: dict, op_value) -> dict:
    op, value = op_value
    return {**base, "op": op, "value": value}


trait_condition = st.one_of(
    st.builds(
        with_op,
        st.fixed_dictionaries({"kind": st.just("trait"), "name": st.sampled_from(["age", "country"])}),
        number_op(st.integers(min_value=15, max_value=70)),
    ),
    st.builds(
        with_op,
        st.fixed_dictionaries({"kind": st.just("trait"), "name": st.sampled_from(["country", "plan", "vip"])}),
        st.one_of(
            st.tuples(st.sampled_from(["eq", "neq"]), st.sampled_from(["FR", "DE", "plus", True, "30"])),
            st.tuples(st.sampled_from(["in", "not_in"]), st.lists(st.sampled_from(["FR", "US", "free"]), min_size=1)),
            st.tuples(st.sampled_from(["contains", "starts_with"]), st.sampled_from(["f", "R", "lu"])),
        ),
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("trait"),
            "name": st.sampled_from(["plan", "vip", "age"]),
            "op": st.sampled_from(["exists", "not_exists"]),
        }
    ),
)
event_condition = st.one_of(
    st.builds(
        with_op,
        st.fixed_dictionaries(
            {
                "kind": st.just("event"),
                "event": st.sampled_from([*EVENT_TYPES, "*"]),
                "measure": st.sampled_from(["count", "sum"]),
                "within": st.one_of(st.none(), st.integers(min_value=1, max_value=45)),
            }
        ),
        number_op(st.integers(min_value=0, max_value=400).map(lambda v: v if v < 8 or v % 50 == 0 else v % 8)),
    ),
    st.builds(
        with_op,
        st.fixed_dictionaries(
            {
                "kind": st.just("event"),
                "event": st.just("purchase"),
                "measure": st.just("sum"),
                "property": st.just("revenue"),
            }
        ),
        number_op(st.integers(min_value=0, max_value=500)),
    ),
    st.builds(
        with_op,
        st.fixed_dictionaries(
            {
                "kind": st.just("event"),
                "event": st.sampled_from([*EVENT_TYPES, "*"]),
                "measure": st.sampled_from(["days_since_last", "days_since_first"]),
            }
        ),
        number_op(st.integers(min_value=0, max_value=40)),
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("event"),
            "event": st.sampled_from(EVENT_TYPES),
            "op": st.sampled_from(["exists", "not_exists"]),
            "within": st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
        }
    ),
)
other_condition = st.one_of(
    st.builds(
        with_op,
        st.fixed_dictionaries(
            {
                "kind": st.just("profile"),
                "field": st.sampled_from(
                    [
                        "session_count",
                        "event_count",
                        "purchase_count",
                        "days_since_last_visit",
                        "days_since_first_visit",
                    ]
                ),
            }
        ),
        number_op(small),
    ),
    st.builds(
        with_op,
        st.fixed_dictionaries({"kind": st.just("context"), "field": st.sampled_from(["device_type", "country"])}),
        st.one_of(
            st.tuples(st.sampled_from(["eq", "neq"]), st.sampled_from(["mobile", "FR"])),
            st.tuples(st.sampled_from(["in", "not_in"]), st.lists(st.sampled_from(["desktop", "DE"]), min_size=1)),
        ),
    ),
    st.builds(
        with_op,
        st.fixed_dictionaries({"kind": st.just("context"), "field": st.just("local_hour")}),
        number_op(st.integers(min_value=0, max_value=23)),
    ),
)
condition = st.one_of(trait_condition, event_condition, other_condition)
rules = st.recursive(
    condition,
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=6,
)


class _Rollback(Exception):
    pass


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(profile, min_size=1, max_size=5), rule=rules)
def test_realtime_membership_equals_batch_membership(source, people, rule):
    assert rule_validate(rule) == []
    jsonschema.validate(rule, RULE_SCHEMA)
    try:
        with transaction.atomic():
            made = [make_profile(source, **spec) for spec in people]
            segment = Segment.objects.create(key="prop", name="prop", rule=rule)
            segment_recompute(segment_id=segment.pk, now=NOW)
            batch = set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
            one = [ActiveSegment(segment.pk, segment.key, rule)]
            realtime = {
                p.pk for p in made if profile_segments_evaluate(profile_id=p.pk, segments=one, now=NOW)[segment.pk]
            }
            assert realtime == batch, (rule, people)
            raise _Rollback
    except _Rollback:
        pass


windowed_event = st.one_of(
    st.builds(
        with_op,
        st.fixed_dictionaries(
            {
                "kind": st.just("event"),
                "event": st.sampled_from([*EVENT_TYPES, "*"]),
                "measure": st.sampled_from(["count", "sum"]),
                "within": st.integers(min_value=1, max_value=45),
            }
        ),
        number_op(st.integers(min_value=0, max_value=400).map(lambda v: v if v < 8 or v % 50 == 0 else v % 8)),
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("event"),
            "event": st.sampled_from(EVENT_TYPES),
            "op": st.just("exists"),
            "within": st.integers(min_value=1, max_value=45),
        }
    ),
)
merge_candidates = st.builds(
    lambda events, others: {"all": events + others},
    st.lists(windowed_event, min_size=2, max_size=4),
    st.lists(condition, max_size=2),
)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(profile, min_size=1, max_size=5), rule=merge_candidates)
def test_event_conditions_merged_into_one_pass_match_the_same_profiles(source, people, rule):
    from segments.compiler import rule_compile
    from tracking.models import Profile

    try:
        with transaction.atomic():
            made = {p.pk for p in (make_profile(source, **spec) for spec in people)}
            merged = set(Profile.objects.filter(rule_compile(rule, now=NOW)).values_list("pk", flat=True))
            separate = Profile.objects.filter(rule_compile(rule, now=NOW, merge=False)).values_list("pk", flat=True)
            assert merged & made == set(separate) & made, (rule, people)
            raise _Rollback
    except _Rollback:
        pass


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(profile, min_size=1, max_size=4), rule=rules, stale=st.sets(st.integers(0, 3)))
def test_realtime_refresh_statement_stores_the_batch_members(source, people, rule, stale):
    """The refresh's one statement (evaluate, insert entrants, delete leavers, history; prepared on
    Postgres) leaves exactly the members the batch recompute stores, from any starting membership."""
    from segments.models import SegmentMembershipChange
    from segments.services.membership import profile_segments_refresh

    try:
        with transaction.atomic():
            made = [make_profile(source, **spec) for spec in people]
            batch_segment = Segment.objects.create(key="batch", name="batch", rule=rule, status="paused")
            segment_recompute(segment_id=batch_segment.pk, now=NOW)
            batch = set(SegmentMembership.objects.filter(segment=batch_segment).values_list("profile_id", flat=True))
            live = Segment.objects.create(key="live", name="live", rule=rule)
            before = {made[i].pk for i in stale if i < len(made)}  # members from an older state, right or wrong
            for pk in before:
                SegmentMembership.objects.create(segment=live, profile_id=pk, entered_at=NOW)
            changes = [c for p in made for c in profile_segments_refresh(profile_id=p.pk, now=NOW)]
            stored = set(SegmentMembership.objects.filter(segment=live).values_list("profile_id", flat=True))
            assert stored == batch, (rule, people)
            assert {(c.profile_id, c.kind) for c in changes} == {(p, "entered") for p in batch - before} | {
                (p, "left") for p in before - batch
            }
            history = SegmentMembershipChange.objects.filter(segment=live, via="realtime")
            assert sorted(history.values_list("profile_id", "kind")) == sorted((c.profile_id, c.kind) for c in changes)
            raise _Rollback
    except _Rollback:
        pass

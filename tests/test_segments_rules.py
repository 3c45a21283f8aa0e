"""The rule language, pure: validation errors that point at the node, the JSON Schema, the catalogue
and the dependencies that decide which events re-evaluate a segment."""

from __future__ import annotations

import jsonschema
import pytest

from segments.rules import RULE_SCHEMA, RuleError, rule_catalogue, rule_dependencies, rule_validate
from segments.templates import TEMPLATES


@pytest.mark.parametrize("key", list(TEMPLATES))
def test_every_template_is_a_valid_rule_for_the_validator_and_the_schema(key):
    rule = TEMPLATES[key][2]
    assert rule_validate(rule) == []
    jsonschema.validate(rule, RULE_SCHEMA)


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (
            {
                "all": [
                    {"kind": "trait", "name": "a", "op": "eq", "value": 1},
                    {"kind": "trait", "name": "c", "op": "in", "value": "FR"},
                ]
            },
            ("$.all[1].value", "expected a list for operator in"),
        ),
        ([], ("$", "expected an object (a group or a condition), got list")),
        ({"any": []}, ("$.any", "expected at least one condition")),
        ({"all": {"kind": "trait"}}, ("$.all", "expected a list of conditions, got object")),
        (
            {"not": {"kind": "weather"}},
            (
                "$.not.kind",
                "unknown kind 'weather'; expected one of trait, profile, event, context, consent, segment, score",
            ),
        ),
        (
            {"kind": "trait", "name": "age", "op": "between", "value": [40, 20]},
            ("$.value", "low (40) is greater than high (20)"),
        ),
        (
            {"kind": "trait", "name": "age", "op": "like", "value": 1},
            (
                "$.op",
                "unknown operator 'like'; expected one "
                "of eq, neq, in, not_in, gt, gte, lt, lte, between, contains, starts_with, exists, not_exists",
            ),
        ),
        (
            {"kind": "event", "event": "purchase", "op": "gte", "value": 1.5},
            ("$.value", "expected a whole number, got number 1.5"),
        ),
        (
            {"kind": "event", "event": "purchase", "measure": "days_since_last", "within": 7, "op": "gt", "value": 1},
            ("$.within", "a window does not apply to days_since_last"),
        ),
        (
            {"kind": "event", "event": "purchase", "op": "gte", "value": 1, "within": 0},
            ("$.within", "expected a number of days from 1 to 3650, or null for ever"),
        ),
        (
            {"kind": "event", "event": "view", "property": "price", "op": "gte", "value": 1},
            ("$.property", "only a sum takes a property"),
        ),
        (
            {"kind": "context", "field": "device_type", "op": "gt", "value": "a"},
            (
                "$.op",
                "operator gt does not apply here; expected one of eq, neq, in, not_in, contains, starts_with, "
                "exists, not_exists",
            ),
        ),
        (
            {"kind": "consent", "purpose": "marketing", "state": "maybe"},
            ("$.state", "expected one of granted, denied, unset"),
        ),
        (
            {"kind": "trait", "name": "plan", "op": "exists", "value": "x"},
            ("$.value", "operator exists takes no value"),
        ),
        (
            {"kind": "profile", "field": "age", "op": "eq", "value": 1},
            (
                "$.field",
                "unknown profile field 'age'; "
                "expected one of event_count, session_count, purchase_count, revenue, days_since_last_visit, "
                "days_since_first_visit",
            ),
        ),
        (
            {"all": [{"kind": "trait", "name": "a", "op": "eq", "value": 1}], "any": []},
            ("$", "a group has exactly one key (all); unexpected any"),
        ),
        (
            {"kind": "trait", "name": "a", "op": "eq", "value": 1, "extra": 2},
            ("$.extra", "unknown field for a trait condition"),
        ),
    ],
)
def test_invalid_rules_are_reported_at_the_bad_node(rule, error):
    assert RuleError(*error) in rule_validate(rule)


def test_several_errors_are_all_reported():
    rule = {"any": [{"kind": "trait", "op": "eq", "value": 1}, {"kind": "score", "name": "x", "op": "gt"}]}
    assert [str(e) for e in rule_validate(rule)] == [
        "$.any[0].name: expected the trait name as a non-empty string",
        "$.any[1].value: a value is required for operator gt",
    ]


def test_deep_or_huge_rules_are_refused():
    deep = {"kind": "trait", "name": "a", "op": "exists"}
    for _ in range(20):
        deep = {"not": deep}
    assert any("nested too deeply" in e.message for e in rule_validate(deep))
    wide = {"any": [{"kind": "trait", "name": "a", "op": "exists"}] * 300}
    assert any("too many nodes" in e.message for e in rule_validate(wide))


def test_dependencies_say_which_events_and_segments_a_rule_reads():
    deps = rule_dependencies(TEMPLATES["cart_abandoners"][2])
    assert (deps.event_types, deps.any_event, deps.time_based) == ({"add_to_cart", "purchase"}, False, True)
    assert deps.affected_by({"purchase"}) and not deps.affected_by({"page_view"})
    high_value = rule_dependencies(TEMPLATES["high_value_buyers"][2])
    assert (high_value.event_types, high_value.time_based) == ({"purchase"}, False)
    churn = rule_dependencies(TEMPLATES["at_risk_churners"][2])
    assert churn.scores == {"churn_risk"}
    nested = rule_dependencies(
        {"all": [{"kind": "segment", "segment": "vip"}, {"kind": "trait", "name": "a", "op": "exists"}]}
    )
    assert (nested.segments, nested.any_event) == ({"vip"}, True)
    assert nested.affected_by({"page_view"})


def test_the_catalogue_lists_operators_and_value_types_for_the_builder():
    catalogue = rule_catalogue()
    assert catalogue["operators"]["between"]["value"] == "pair"
    assert "within" in catalogue["kinds"]["event"]["params"]
    assert catalogue["kinds"]["context"]["fields"]["device_type"]["operators"][:2] == ["eq", "neq"]
    assert catalogue["kinds"]["event"]["measures"]["days_since_last"]["window"] is False

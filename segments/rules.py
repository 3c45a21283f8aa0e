"""The segment rule language, pure (no Django): JSON Schema, validation with node paths, the catalogue
the admin builder renders from, and the dependencies that decide when a rule must be re-evaluated.

A rule is a tree. Groups: ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": node}``. Conditions carry
a ``kind``: ``trait``, ``profile``, ``event``, ``context``, ``consent``, ``segment``, ``score`` (see
:func:`rule_catalogue` and the README for every field and operator).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 12
MAX_NODES = 200
MAX_LIST = 1000
MAX_WITHIN_DAYS = 3650
NAME_RE = re.compile(r"^[A-Za-z0-9_\-:.$ ]{1,100}$")

EQUALITY = ("eq", "neq")
MEMBERSHIP = ("in", "not_in")
ORDER = ("gt", "gte", "lt", "lte", "between")
TEXT = ("contains", "starts_with")
PRESENCE = ("exists", "not_exists")

OPERATORS: dict[str, dict[str, str]] = {
    "eq": {"label": "is", "value": "scalar"},
    "neq": {"label": "is not", "value": "scalar"},
    "in": {"label": "is one of", "value": "list"},
    "not_in": {"label": "is none of", "value": "list"},
    "gt": {"label": ">", "value": "scalar"},
    "gte": {"label": "≥", "value": "scalar"},
    "lt": {"label": "<", "value": "scalar"},
    "lte": {"label": "≤", "value": "scalar"},
    "between": {"label": "between (inclusive)", "value": "pair"},
    "contains": {"label": "contains (case-insensitive)", "value": "text"},
    "starts_with": {"label": "starts with (case-insensitive)", "value": "text"},
    "exists": {"label": "is set", "value": "none"},
    "not_exists": {"label": "is not set", "value": "none"},
}

# Value types: what the operators compare against.
NUMBER_OPS = EQUALITY + MEMBERSHIP + ORDER
STRING_OPS = EQUALITY + MEMBERSHIP + TEXT + PRESENCE
ANY_OPS = tuple(OPERATORS)

PROFILE_FIELDS: dict[str, dict[str, Any]] = {
    "event_count": {"label": "Events (lifetime)", "type": "integer", "time_based": False},
    "session_count": {"label": "Sessions (lifetime)", "type": "integer", "time_based": False},
    "purchase_count": {"label": "Purchases (lifetime)", "type": "integer", "time_based": False},
    "revenue": {"label": "Revenue (lifetime)", "type": "number", "time_based": False},
    "days_since_last_visit": {"label": "Days since last visit", "type": "days", "time_based": True},
    "days_since_first_visit": {"label": "Days since first visit", "type": "days", "time_based": True},
}
CONTEXT_FIELDS: dict[str, dict[str, str]] = {
    "device_type": {"label": "Last device type", "type": "string", "examples": "desktop, mobile, tablet, bot"},
    "os": {"label": "Last operating system", "type": "string", "examples": "iOS, Android, Windows"},
    "browser": {"label": "Last browser", "type": "string", "examples": "Chrome, Safari, Firefox"},
    "country": {"label": "Last country (ISO code)", "type": "string", "examples": "FR, DE, US"},
    "traffic_source": {
        "label": "Last traffic source",
        "type": "string",
        "examples": "direct, organic_search, paid, social, email, referral",
    },
    "local_hour": {"label": "Local hour of the last event (0-23)", "type": "integer"},
    "local_weekday": {"label": "Local weekday of the last event (0 = Monday)", "type": "integer"},
}
EVENT_MEASURES: dict[str, dict[str, Any]] = {
    "count": {"label": "number of events", "type": "integer", "window": True},
    "sum": {
        "label": "sum of a numeric property (default: the event's value, e.g. revenue)",
        "type": "number",
        "window": True,
    },
    "days_since_last": {"label": "days since the last one", "type": "days", "window": False},
    "days_since_first": {"label": "days since the first one", "type": "days", "window": False},
}
CONSENT_STATES = ("granted", "denied", "unset")
SCORE_FIELDS = {"value": "number", "label": "string"}
OPS_BY_TYPE = {
    "integer": NUMBER_OPS + PRESENCE,
    "number": NUMBER_OPS + PRESENCE,
    "days": NUMBER_OPS + PRESENCE,
    "string": STRING_OPS,
    "any": ANY_OPS,
}
KINDS = ("trait", "profile", "event", "context", "consent", "segment", "score")


@dataclass(frozen=True, slots=True)
class RuleError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class RuleDeps:
    """What a rule reads: event types whose arrival can change it (`any_event`: every event can, e.g.
    traits or last context), segments it refers to, whether time alone changes it, and scores."""

    event_types: set[str] = field(default_factory=set)
    any_event: bool = False
    segments: set[str] = field(default_factory=set)
    time_based: bool = False
    scores: set[str] = field(default_factory=set)

    def affected_by(self, event_types: set[str] | frozenset[str] | None) -> bool:
        if event_types is None:
            return True
        return bool(event_types) and (self.any_event or bool(self.event_types & set(event_types)))


def _scalar_schema() -> dict:
    return {"type": ["string", "number", "boolean"]}


def _condition_schema(kind: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "properties": {"kind": {"const": kind}, **properties},
        "required": ["kind", *required],
        "additionalProperties": False,
    }


_VALUE = {"anyOf": [_scalar_schema(), {"type": "array", "items": _scalar_schema(), "maxItems": MAX_LIST}]}
_OP = {"enum": list(OPERATORS)}

RULE_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Segment rule",
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "oneOf": [
                {"$ref": "#/$defs/all"},
                {"$ref": "#/$defs/any"},
                {"$ref": "#/$defs/not"},
                {"$ref": "#/$defs/condition"},
            ]
        },
        "all": {
            "type": "object",
            "properties": {"all": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["all"],
            "additionalProperties": False,
        },
        "any": {
            "type": "object",
            "properties": {"any": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["any"],
            "additionalProperties": False,
        },
        "not": {
            "type": "object",
            "properties": {"not": {"$ref": "#/$defs/node"}},
            "required": ["not"],
            "additionalProperties": False,
        },
        "condition": {
            "oneOf": [
                _condition_schema("trait", {"name": {"type": "string"}, "op": _OP, "value": _VALUE}, ["name", "op"]),
                _condition_schema(
                    "profile", {"field": {"enum": list(PROFILE_FIELDS)}, "op": _OP, "value": _VALUE}, ["field", "op"]
                ),
                _condition_schema(
                    "event",
                    {
                        "event": {"type": "string"},
                        "measure": {"enum": list(EVENT_MEASURES)},
                        "property": {"type": "string"},
                        "within": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_WITHIN_DAYS},
                        "op": _OP,
                        "value": _VALUE,
                    },
                    ["event", "op"],
                ),
                _condition_schema(
                    "context", {"field": {"enum": list(CONTEXT_FIELDS)}, "op": _OP, "value": _VALUE}, ["field", "op"]
                ),
                _condition_schema(
                    "consent",
                    {"purpose": {"type": "string"}, "state": {"enum": list(CONSENT_STATES)}},
                    ["purpose", "state"],
                ),
                _condition_schema("segment", {"segment": {"type": "string"}}, ["segment"]),
                _condition_schema(
                    "score",
                    {"name": {"type": "string"}, "field": {"enum": list(SCORE_FIELDS)}, "op": _OP, "value": _VALUE},
                    ["name", "op"],
                ),
            ]
        },
    },
}


def rule_catalogue() -> dict:
    """Everything the admin builder needs to offer: groups, condition kinds with their fields, the
    operators each accepts and the type of value each operator takes."""
    return {
        "groups": {"all": "all of", "any": "any of", "not": "not"},
        "operators": OPERATORS,
        "kinds": {
            "trait": {
                "label": "Trait",
                "params": {"name": {"type": "string", "label": "Trait name, e.g. plan, age, country"}},
                "value_type": "any",
                "operators": list(ANY_OPS),
            },
            "profile": {
                "label": "Profile aggregate",
                "fields": {
                    name: {"label": f["label"], "value_type": f["type"], "operators": list(OPS_BY_TYPE[f["type"]])}
                    for name, f in PROFILE_FIELDS.items()
                },
            },
            "event": {
                "label": "Behaviour",
                "params": {
                    "event": {"type": "string", "label": 'Event type, e.g. add_to_cart; "*" for any event'},
                    "measure": {"type": "enum", "choices": list(EVENT_MEASURES), "default": "count"},
                    "property": {"type": "string", "label": "Numeric property to sum (sum only; default: value)"},
                    "within": {"type": "integer", "label": "Within the last N days (count and sum; empty: ever)"},
                },
                "measures": {
                    name: {
                        "label": m["label"],
                        "value_type": m["type"],
                        "window": m["window"],
                        "operators": list(OPS_BY_TYPE[m["type"]]),
                    }
                    for name, m in EVENT_MEASURES.items()
                },
            },
            "context": {
                "label": "Last context",
                "fields": {
                    name: {
                        "label": f["label"],
                        "value_type": f["type"],
                        "operators": list(OPS_BY_TYPE[f["type"]]),
                        **({"examples": f["examples"]} if "examples" in f else {}),
                    }
                    for name, f in CONTEXT_FIELDS.items()
                },
            },
            "consent": {
                "label": "Consent",
                "params": {
                    "purpose": {"type": "string", "label": "Purpose key, e.g. personalization, marketing"},
                    "state": {"type": "enum", "choices": list(CONSENT_STATES)},
                },
            },
            "segment": {
                "label": "Member of segment",
                "params": {"segment": {"type": "string", "label": "Segment key"}},
            },
            "score": {
                "label": "Score",
                "params": {"name": {"type": "string", "label": "Score name, e.g. churn_risk, rfm_segment"}},
                "fields": {
                    "value": {"value_type": "number", "operators": list(OPS_BY_TYPE["number"])},
                    "label": {"value_type": "string", "operators": list(OPS_BY_TYPE["string"])},
                },
            },
        },
    }


class _Validator:
    def __init__(self) -> None:
        self.errors: list[RuleError] = []
        self.nodes = 0

    def error(self, path: str, message: str) -> None:
        self.errors.append(RuleError(path, message))

    def node(self, node: Any, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes == MAX_NODES + 1:
            self.error(path, f"too many nodes: a rule has at most {MAX_NODES}")
        if self.nodes > MAX_NODES:
            return
        if depth > MAX_DEPTH:
            self.error(path, f"nested too deeply: at most {MAX_DEPTH} levels")
            return
        if not isinstance(node, dict):
            self.error(path, f"expected an object (a group or a condition), got {_type_name(node)}")
            return
        groups = [key for key in ("all", "any", "not") if key in node]
        if groups:
            if len(node) != 1:
                extra = sorted(set(node) - {groups[0]})
                self.error(path, f"a group has exactly one key ({groups[0]}); unexpected {', '.join(extra)}")
                return
            key = groups[0]
            child = node[key]
            if key == "not":
                self.node(child, f"{path}.not", depth + 1)
                return
            if not isinstance(child, list):
                self.error(f"{path}.{key}", f"expected a list of conditions, got {_type_name(child)}")
                return
            if not child:
                self.error(f"{path}.{key}", "expected at least one condition")
            for index, item in enumerate(child):
                self.node(item, f"{path}.{key}[{index}]", depth + 1)
            return
        kind = node.get("kind")
        if kind is None:
            self.error(path, 'expected a group ("all", "any", "not") or a condition with a "kind"')
            return
        if kind not in KINDS:
            self.error(f"{path}.kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
            return
        getattr(self, f"cond_{kind}")(node, path)

    def _keys(self, node: dict, path: str, allowed: set[str]) -> None:
        for key in sorted(set(node) - allowed - {"kind"}):
            self.error(f"{path}.{key}", f"unknown field for a {node['kind']} condition")

    def _name(self, node: dict, path: str, key: str, what: str) -> None:
        value = node.get(key)
        if not isinstance(value, str) or not value:
            self.error(f"{path}.{key}", f"expected the {what} as a non-empty string")
        elif not NAME_RE.match(value):
            self.error(f"{path}.{key}", f"{value!r} is not a valid {what} (letters, digits, _ - : . $, at most 100)")

    def _op(self, node: dict, path: str, value_type: str) -> None:
        op = node.get("op")
        allowed = OPS_BY_TYPE[value_type]
        if op not in OPERATORS:
            self.error(f"{path}.op", f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}")
            return
        if op not in allowed:
            self.error(f"{path}.op", f"operator {op} does not apply here; expected one of {', '.join(allowed)}")
            return
        self._value(node, path, op, value_type)

    def _value(self, node: dict, path: str, op: str, value_type: str) -> None:
        vpath = f"{path}.value"
        has = "value" in node
        value = node.get("value")
        if op in PRESENCE:
            if has and value is not None:
                self.error(vpath, f"operator {op} takes no value")
            return
        if not has:
            self.error(vpath, f"a value is required for operator {op}")
            return
        if op in MEMBERSHIP:
            if not isinstance(value, list):
                self.error(vpath, f"expected a list for operator {op}")
                return
            if not value:
                self.error(vpath, f"expected at least one value for operator {op}")
            if len(value) > MAX_LIST:
                self.error(vpath, f"at most {MAX_LIST} values")
            for index, item in enumerate(value):
                self._scalar(item, f"{vpath}[{index}]", value_type)
            return
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                self.error(vpath, "expected a list [low, high] for operator between")
                return
            ok = self._scalar(value[0], f"{vpath}[0]", value_type, order=True)
            ok = self._scalar(value[1], f"{vpath}[1]", value_type, order=True) and ok
            if ok and type(value[0]) is not type(value[1]) and not all(_is_number(v) for v in value):
                self.error(vpath, "low and high must be of the same type")
            elif ok and value[0] > value[1]:
                self.error(vpath, f"low ({value[0]}) is greater than high ({value[1]})")
            return
        if op in TEXT:
            if not isinstance(value, str) or not value:
                self.error(vpath, f"expected a non-empty string for operator {op}")
            return
        self._scalar(value, vpath, value_type, order=op in ORDER)

    def _scalar(self, value: Any, path: str, value_type: str, order: bool = False) -> bool:
        if value_type in ("integer", "days"):
            if not (_is_number(value) and float(value).is_integer()):
                self.error(path, f"expected a whole number, got {_type_name(value)} {value!r}")
                return False
            if value_type == "days" and value < 0:
                self.error(path, "expected a number of days >= 0")
                return False
            return True
        if value_type == "number":
            if not _is_number(value):
                self.error(path, f"expected a number, got {_type_name(value)} {value!r}")
                return False
            return True
        if value_type == "string":
            if not isinstance(value, str):
                self.error(path, f"expected a string, got {_type_name(value)} {value!r}")
                return False
            return True
        # Traits: strings, numbers or booleans; order operators compare numbers or strings.
        if order and not (_is_number(value) or isinstance(value, str)):
            self.error(path, f"expected a number or a string to compare with, got {_type_name(value)}")
            return False
        if not (isinstance(value, (str, bool)) or _is_number(value)):
            self.error(path, f"expected a string, number or boolean, got {_type_name(value)}")
            return False
        return True

    def cond_trait(self, node: dict, path: str) -> None:
        self._keys(node, path, {"name", "op", "value"})
        self._name(node, path, "name", "trait name")
        self._op(node, path, "any")

    def cond_profile(self, node: dict, path: str) -> None:
        self._keys(node, path, {"field", "op", "value"})
        spec = PROFILE_FIELDS.get(node.get("field"))
        if spec is None:
            self.error(
                f"{path}.field",
                f"unknown profile field {node.get('field')!r}; expected one of {', '.join(PROFILE_FIELDS)}",
            )
            return
        self._op(node, path, spec["type"])

    def cond_context(self, node: dict, path: str) -> None:
        self._keys(node, path, {"field", "op", "value"})
        spec = CONTEXT_FIELDS.get(node.get("field"))
        if spec is None:
            self.error(
                f"{path}.field",
                f"unknown context field {node.get('field')!r}; expected one of {', '.join(CONTEXT_FIELDS)}",
            )
            return
        if spec["type"] == "integer" and node.get("op") in TEXT:
            self.error(f"{path}.op", f"operator {node['op']} does not apply to {node['field']}")
            return
        self._op(node, path, spec["type"])

    def cond_event(self, node: dict, path: str) -> None:
        self._keys(node, path, {"event", "measure", "property", "within", "op", "value"})
        if node.get("event") != "*":  # "*": any event
            self._name(node, path, "event", "event type")
        measure = node.get("measure", "count")
        spec = EVENT_MEASURES.get(measure)
        if spec is None:
            self.error(f"{path}.measure", f"unknown measure {measure!r}; expected one of {', '.join(EVENT_MEASURES)}")
            return
        if "property" in node:
            if measure != "sum":
                self.error(f"{path}.property", "only a sum takes a property")
            else:
                self._name(node, path, "property", "property name")
        within = node.get("within")
        if within is not None:
            if not spec["window"]:
                self.error(f"{path}.within", f"a window does not apply to {measure}")
            elif not (isinstance(within, int) and not isinstance(within, bool) and 1 <= within <= MAX_WITHIN_DAYS):
                self.error(f"{path}.within", f"expected a number of days from 1 to {MAX_WITHIN_DAYS}, or null for ever")
        self._op(node, path, spec["type"])

    def cond_consent(self, node: dict, path: str) -> None:
        self._keys(node, path, {"purpose", "state"})
        self._name(node, path, "purpose", "purpose key")
        if node.get("state") not in CONSENT_STATES:
            self.error(f"{path}.state", f"expected one of {', '.join(CONSENT_STATES)}")

    def cond_segment(self, node: dict, path: str) -> None:
        self._keys(node, path, {"segment"})
        self._name(node, path, "segment", "segment key")

    def cond_score(self, node: dict, path: str) -> None:
        self._keys(node, path, {"name", "field", "op", "value"})
        self._name(node, path, "name", "score name")
        score_field = node.get("field", "value")
        if score_field not in SCORE_FIELDS:
            self.error(f"{path}.field", "expected value or label")
            return
        self._op(node, path, SCORE_FIELDS[score_field])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def rule_validate(rule: Any) -> list[RuleError]:
    """Every problem of a rule, each pointing at its node (``$.all[1].value: ...``); empty when valid."""
    validator = _Validator()
    validator.node(rule, "$", 0)
    return validator.errors


def _walk(node: Any):
    if not isinstance(node, dict):
        return
    if "all" in node or "any" in node:
        for child in node.get("all", node.get("any")) or []:
            yield from _walk(child)
    elif "not" in node:
        yield from _walk(node["not"])
    else:
        yield node


def rule_conditions(rule: Any) -> list[dict]:
    """The conditions (leaves) of a rule, in order."""
    return list(_walk(rule))


def rule_dependencies(rule: Any) -> RuleDeps:
    """What can change a rule's answer for a profile (of a valid rule). Referenced segments are listed,
    not followed: the caller unions their dependencies (it knows their rules)."""
    deps = RuleDeps()
    for cond in _walk(rule):
        kind = cond.get("kind")
        if kind == "event":
            if cond.get("event") == "*":
                deps.any_event = True
            else:
                deps.event_types.add(cond.get("event"))
            measure = cond.get("measure", "count")
            if cond.get("within") is not None or measure.startswith("days_since"):
                deps.time_based = True
        elif kind == "profile":
            deps.any_event = True
            if PROFILE_FIELDS.get(cond.get("field"), {}).get("time_based"):
                deps.time_based = True
        elif kind in ("trait", "context", "consent"):
            # Traits arrive with identify (and other) events, context with every event, and consent
            # decisions ride on events' context: any stored event may change them.
            deps.any_event = True
        elif kind == "segment":
            deps.segments.add(cond.get("segment"))
        elif kind == "score":
            deps.scores.add(cond.get("name"))
    return deps


def rule_segment_refs(rule: Any) -> set[str]:
    return {cond["segment"] for cond in _walk(rule) if cond.get("kind") == "segment" and "segment" in cond}

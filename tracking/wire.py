"""Wire formats of incoming events (our own JSON and Segment's tracking API) into one checked shape.

Pure Python, no Django: every error names where it is (`events[3].timestamp: ...`), so a sender
can fix the one bad event of a batch while the good ones are stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

KINDS = ("track", "page", "screen", "identify", "alias", "group")
MAX_ID_LENGTH = 128
MAX_MESSAGE_ID_LENGTH = 100
MAX_TYPE_LENGTH = 100
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

# Our own API names page and screen views like any event; these map them to Segment's call kinds.
NATIVE_KIND_BY_TYPE = {
    "page_view": "page",
    "screen_view": "screen",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
}
# Segment's e-commerce spec names mapped to our canonical event types, so SDK traffic and the
# snippet feed the same aggregates, segments and recommenders.
SEGMENT_EVENT_TYPES = {
    "Order Completed": "purchase",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Viewed": "product_view",
    "Product Clicked": "product_click",
    "Products Searched": "search",
    "Checkout Started": "checkout",
    "Cart Viewed": "cart_view",
    "Product Added to Wishlist": "add_to_wishlist",
    "Signed Up": "sign_up",
    "Signed In": "login",
}
TYPE_BY_SEGMENT_KIND = {
    "page": "page_view",
    "screen": "screen_view",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
}


class Invalid(Exception):
    """A field of one event is wrong; `path` says which."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(slots=True)
class EventIn:
    """One checked event, ready for enrichment and storage."""

    index: int
    kind: str
    type: str
    message_id: str
    anonymous_id: str
    user_id: str
    timestamp: datetime
    properties: dict = field(default_factory=dict)
    traits: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    previous_id: str = ""
    # Traits the source keeps encrypted at rest, taken out of `traits` before anything is stored.
    protected: dict = field(default_factory=dict)


@dataclass(slots=True)
class Rejected:
    index: int
    path: str
    message: str
    message_id: str = ""
    reason: str = "invalid"

    def as_dict(self) -> dict:
        return {"index": self.index, "message_id": self.message_id or None, "field": self.path, "error": self.message}


def parse_time(value: object, path: str) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Epoch milliseconds, as JavaScript's Date.now() gives them.
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise Invalid(path, "is not a valid epoch-milliseconds time") from exc
    if not isinstance(value, str):
        raise Invalid(path, f"must be an ISO 8601 string, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise Invalid(path, f"is not an ISO 8601 time: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _opt_object(raw: dict, key: str, path: str) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(_at(path, key), f"must be an object, got {_type_name(value)}")
    return value


def _opt_id(raw: dict, key: str, path: str, max_length: int = MAX_ID_LENGTH) -> str:
    value = raw.get(key)
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(_at(path, key), f"must be a string, got {_type_name(value)}")
    value = str(value).strip()
    if len(value) > max_length:
        raise Invalid(_at(path, key), f"is longer than {max_length} characters")
    if _text_problem(value):
        raise Invalid(_at(path, key), _text_problem(value))
    return value


def _event_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(path, "is required and must be a non-empty string")
    value = value.strip()
    if len(value) > MAX_TYPE_LENGTH:
        raise Invalid(path, f"is longer than {MAX_TYPE_LENGTH} characters")
    if _text_problem(value):
        raise Invalid(path, _text_problem(value))
    return value


def _text_problem(text: str) -> str:
    """Why Postgres could not store this text, or ''. NUL and lone UTF-16 surrogates are refused."""
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired UTF-16 surrogate"
    return ""


def _no_nul(value: object, path: str) -> None:
    """Refuse text Postgres cannot store (NUL, lone surrogates) with a path, rather than fail later."""
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise Invalid(path, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if _text_problem(key):
                raise Invalid(path, f"has a key that {_text_problem(key)}")
            _no_nul(item, _at(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, f"{path}[{i}]")


def _message_id(raw: dict, key: str, path: str) -> str:
    message_id = _opt_id(raw, key, path, MAX_MESSAGE_ID_LENGTH)
    if message_id:
        return message_id
    # No id sent: derive one from the content, so a retried identical payload is still stored once.
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return "auto-" + digest[:40]


def _resolve_time(
    raw_time: object, sent_at: datetime | None, path: str, received_at: datetime, max_future: timedelta
) -> datetime:
    if raw_time is None or raw_time == "":
        timestamp = sent_at or received_at
    else:
        timestamp = parse_time(raw_time, path)
    if sent_at is not None:
        # The sender's clock may be off: shift by the gap between its sentAt and our receipt.
        try:
            timestamp = timestamp + (received_at - sent_at)
        except OverflowError:
            raise Invalid(path, "is out of range once corrected for the sender's clock (sentAt)") from None
    if timestamp > received_at + max_future:
        raise Invalid(path, f"is {timestamp.isoformat()}, too far in the future")
    if timestamp < EARLIEST:
        raise Invalid(path, f"is {timestamp.isoformat()}, before {EARLIEST.year}")
    return timestamp


def native_event(
    raw: object, *, index: int, path: str, received_at: datetime, sent_at: datetime | None, max_future: timedelta
) -> EventIn:
    """One event of our own API: `type`, `anonymous_id` and/or `user_id`, `message_id`, ..."""
    if not isinstance(raw, dict):
        raise Invalid(path or "body", f"must be an object, got {_type_name(raw)}")
    event_type = _event_name(raw.get("type"), _at(path, "type"))
    kind = NATIVE_KIND_BY_TYPE.get(event_type, "track")
    anonymous_id = _opt_id(raw, "anonymous_id", path)
    user_id = _opt_id(raw, "user_id", path)
    if not anonymous_id and not user_id:
        raise Invalid(_at(path, "anonymous_id"), "anonymous_id or user_id is required")
    if raw.get("sent_at") is not None:
        sent_at = parse_time(raw["sent_at"], _at(path, "sent_at"))
    event = EventIn(
        index=index,
        kind=kind,
        type=event_type,
        message_id=_message_id(raw, "message_id", path),
        anonymous_id=anonymous_id,
        user_id=user_id,
        timestamp=_resolve_time(raw.get("timestamp"), sent_at, _at(path, "timestamp"), received_at, max_future),
        properties=_opt_object(raw, "properties", path),
        traits=_opt_object(raw, "traits", path),
        context=_opt_object(raw, "context", path),
        previous_id=_opt_id(raw, "previous_id", path),
    )
    if kind == "alias" and not event.previous_id:
        raise Invalid(_at(path, "previous_id"), "is required for an alias")
    _check_text(event, path)
    return event


def segment_event(
    raw: object,
    *,
    index: int,
    path: str,
    received_at: datetime,
    sent_at: datetime | None,
    max_future: timedelta,
    kind: str | None = None,
) -> EventIn:
    """One call of Segment's tracking API (track, identify, page, screen, alias, group)."""
    if not isinstance(raw, dict):
        raise Invalid(path or "body", f"must be an object, got {_type_name(raw)}")
    if kind is None:
        kind = raw.get("type")
        if kind not in KINDS:
            raise Invalid(_at(path, "type"), f"must be one of {', '.join(KINDS)}")
    anonymous_id = _opt_id(raw, "anonymousId", path)
    user_id = _opt_id(raw, "userId", path)
    if not anonymous_id and not user_id:
        raise Invalid(_at(path, "anonymousId"), "anonymousId or userId is required")
    properties = _opt_object(raw, "properties", path)
    traits = _opt_object(raw, "traits", path)
    if kind == "track":
        name = _event_name(raw.get("event"), _at(path, "event"))
        event_type = SEGMENT_EVENT_TYPES.get(name, name)
    else:
        event_type = TYPE_BY_SEGMENT_KIND[kind]
    if kind in ("page", "screen"):
        for key in ("name", "category"):
            if isinstance(raw.get(key), str) and raw[key]:
                properties = {**properties, key: raw[key]}
    previous_id = _opt_id(raw, "previousId", path)
    if kind == "alias" and (not previous_id or not user_id):
        raise Invalid(_at(path, "previousId"), "previousId and userId are required for an alias")
    if kind == "group":
        group_id = _opt_id(raw, "groupId", path)
        if not group_id:
            raise Invalid(_at(path, "groupId"), "is required for a group call")
        # Group traits describe the company, not the person: keep them on the event only.
        properties = {**properties, "group_id": group_id, "group_traits": traits}
        traits = {}
    if raw.get("sentAt") is not None:
        sent_at = parse_time(raw["sentAt"], _at(path, "sentAt"))
    event = EventIn(
        index=index,
        kind=kind,
        type=event_type,
        message_id=_message_id(raw, "messageId", path),
        anonymous_id=anonymous_id,
        user_id=user_id,
        timestamp=_resolve_time(raw.get("timestamp"), sent_at, _at(path, "timestamp"), received_at, max_future),
        properties=properties,
        traits=traits,
        context=_opt_object(raw, "context", path),
        previous_id=previous_id,
    )
    _check_text(event, path)
    return event


def _check_text(event: EventIn, path: str) -> None:
    _no_nul(event.properties, _at(path, "properties"))
    _no_nul(event.traits, _at(path, "traits"))
    _no_nul(event.context, _at(path, "context"))

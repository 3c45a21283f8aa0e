"""Hostile input at every ingestion endpoint: never a server error, good events kept, bad ones named.

Property tests (hypothesis) throw arbitrary JSON, raw bytes, content types, encodings and query strings
at the endpoints; explicit examples pin the answers a sender relies on, including the inputs that
once crashed the server (see "once crashed" below).
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as observe
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.factories import event
from tracking.api.pixel import GIF
from tracking.models import Event, Profile

pytestmark = pytest.mark.django_db

JSON_ENDPOINTS = [
    "/api/v1/events",
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/alias",
    "/v1/group",
    "/v1/batch",
]


def hostile(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture
def api(source) -> APIClient:
    """A client that answers a server error with its 500 response instead of raising, as HTTP would."""
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_X_WRITE_KEY=source.write_key)
    return client


def assert_well_formed(response) -> dict:
    """Never a 5xx; a JSON body that is an ingest result (2xx) or an error with a code and a message (4xx)."""
    if currently_in_test_context():
        observe(f"status {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, response.content[:1000]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str) and body["message"], body
    else:
        assert response.status_code in (200, 207), response.status_code
        assert {"accepted", "duplicates", "rejected"} <= set(body), body
    return body


def stored(source, message_ids) -> set[str]:
    rows = Event.objects.filter(source=source, message_id__in=list(message_ids))
    return set(rows.values_list("message_id", flat=True))


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).isoformat()


# --- strategies ----------------------------------------------------------------------------------------------------

# Lone UTF-16 surrogates and the keys `location` and `revenue` are generated too: each once crashed
# the server. NaN and infinities (JSON extensions that some encoders emit) have explicit tests at the end.

TRICKY_STRINGS = [
    "\ud800",
    "",
    " ",
    "\x00",
    "a\x00b",
    "null",
    "true",
    "0",
    "-1",
    "1e400",
    "NaN",
    "Infinity",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "2000-01-01",
    "1999-12-31T23:59:59Z",
    "2024-02-30T25:61:00Z",
    "not a date",
    "\u202eevil",
    "💥" * 30,
    "é" * 129,
    "x" * 101,
    "<script>alert(1)</script>",
    "'; DROP TABLE tracking_event; --",
    "%00",
    "\\u0000",
    "../../etc/passwd",
    "Europe/Paris",
    "America",
    "zone.tab",
    "http://[::1",
    "http://google.com/?gclid=1",
    "fe80::1%eth0",
    "::ffff:10.1.2.3",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
]
FIELD_NAMES = [
    "type",
    "event",
    "anonymous_id",
    "anonymousId",
    "user_id",
    "userId",
    "message_id",
    "messageId",
    "timestamp",
    "properties",
    "traits",
    "context",
    "previous_id",
    "previousId",
    "groupId",
    "name",
    "category",
    "email",
    "page",
    "url",
    "referrer",
    "campaign",
    "medium",
    "ip",
    "userAgent",
    "timezone",
]

short_text = st.text(max_size=30) | st.sampled_from(TRICKY_STRINGS)
long_text = st.builds(lambda ch, n: ch * n, st.characters(codec="utf-8"), st.integers(100, 40_000))
texts = short_text | long_text
keys = st.text(max_size=12) | st.sampled_from([*FIELD_NAMES, "location", "revenue", *TRICKY_STRINGS[:7]])
numbers = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([2**63, -(2**63) - 1, 10**4000, -(10**300)])
    | st.floats(allow_nan=False, allow_infinity=False)  # NaN and infinities: explicit tests below
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4), max_leaves=12
)
json_objects = st.dictionaries(keys, json_values, max_size=5)

ids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12) | st.sampled_from(
    ["0", "anon-1", "user-1", 42]
)


def field_value(valid):
    """Mostly plausible values for a field, often anything at all."""
    return st.one_of(valid, json_values)


native_calls = st.fixed_dictionaries(
    {},
    optional={
        "type": field_value(st.sampled_from(["page_view", "add_to_cart", "purchase", "identify", "alias", "group"])),
        "anonymous_id": field_value(ids),
        "user_id": field_value(ids),
        "message_id": field_value(st.uuids().map(str)),
        "timestamp": field_value(st.sampled_from(["2024-05-01T10:00:00Z", 1714557600000])),
        "properties": field_value(json_objects),
        "traits": field_value(json_objects),
        "context": field_value(json_objects),
        "previous_id": field_value(ids),
    },
)
segment_calls = st.fixed_dictionaries(
    {},
    optional={
        "type": field_value(st.sampled_from(["track", "identify", "page", "screen", "alias", "group"])),
        "event": field_value(st.sampled_from(["Order Completed", "Product Added", "Signed Up", "custom"])),
        "anonymousId": field_value(ids),
        "userId": field_value(ids),
        "messageId": field_value(st.uuids().map(str)),
        "timestamp": field_value(st.sampled_from(["2024-05-01T10:00:00Z", 1714557600000])),
        "properties": field_value(json_objects),
        "traits": field_value(json_objects),
        "context": field_value(json_objects),
        "previousId": field_value(ids),
        "groupId": field_value(ids),
        "name": field_value(short_text),
        "category": field_value(short_text),
    },
)
bad_sent_at = st.booleans() | st.lists(st.integers(), max_size=2) | st.sampled_from(["", "yesterday", "2024-13-45"])


@st.composite
def bodies(draw, endpoint: str):
    """A JSON body for an endpoint: of the expected shape with hostile content, or anything at all."""
    if endpoint == "/api/v1/events":
        shaped = st.fixed_dictionaries(
            {"events": st.lists(native_calls | json_values, max_size=5)},
            optional={"sent_at": bad_sent_at, "extra": json_values},
        )
        return draw(shaped | st.fixed_dictionaries({"events": json_values}) | json_values)
    if endpoint == "/v1/batch":
        shaped = st.fixed_dictionaries(
            {"batch": st.lists(segment_calls | json_values, max_size=5)},
            optional={"context": json_values, "sentAt": bad_sent_at},
        )
        return draw(shaped | st.fixed_dictionaries({"batch": json_values}) | json_values)
    return draw(segment_calls | json_values)


def post_json(api, endpoint: str, body):
    """JSON with ASCII escapes, as browsers and SDKs send it: a lone surrogate travels as \\udXXX."""
    return api.post(endpoint, json.dumps(body), content_type="application/json")


# --- properties: never a server error ------------------------------------------------------------------------------


@hostile(150)
# Headers reach Django as latin-1 text (PEP 3333): a lone surrogate cannot arrive in one.
@given(data=st.data(), ensure_ascii=st.booleans(), user_agent=short_text.filter(lambda s: "\ud800" not in s))
def test_arbitrary_json_at_any_endpoint_never_causes_a_server_error(api, data, ensure_ascii, user_agent):
    endpoint = data.draw(st.sampled_from(JSON_ENDPOINTS), label="endpoint")
    body = data.draw(bodies(endpoint), label="body")
    # A lone surrogate cannot be UTF-8: sent raw it makes an invalid body, which must be a 400.
    raw = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")

    response = api.post(endpoint, raw, content_type="application/json", HTTP_USER_AGENT=user_agent)

    assert_well_formed(response)


def _gzip_truncated(data: bytes) -> bytes:
    packed = gzip.compress(data)
    return packed[: max(1, len(packed) // 2)]


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(gzip.compress),
    st.binary(max_size=300).map(zlib.compress),
    st.binary(max_size=300).map(_gzip_truncated),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: gzip.compress(json.dumps(v).encode())),
    json_values.map(lambda v: json.dumps(v).encode("utf-16")),
    st.sampled_from([b"", b" ", b"\xef\xbb\xbf{}", b"{", b'{"events": [', b"\xff\xfe\x00", b"[]" * 1000]),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/octet-stream",
        "image/gif",
        "",
    ]
)
content_encodings = st.sampled_from(["", "gzip", "deflate", "br", "identity", "x-gzip", "gzip, gzip", " GZIP ", "zstd"])


@hostile(150)
@given(
    endpoint=st.sampled_from(JSON_ENDPOINTS), body=raw_bodies, content_type=content_types, encoding=content_encodings
)
def test_raw_bytes_content_types_and_encodings_never_cause_a_server_error(
    source, endpoint, body, content_type, encoding
):
    # generic() sends the bytes as they are, whatever the content type says (even nothing).
    client = Client(raise_request_exception=False, HTTP_X_WRITE_KEY=source.write_key)
    extra = {"HTTP_CONTENT_ENCODING": encoding} if encoding else {}

    response = client.generic("POST", endpoint, body, content_type=content_type, **extra)

    assert_well_formed(response)


pixel_params = st.dictionaries(
    st.sampled_from(["e", "a", "u", "m", "t", "url", "ref", "tz", "price", "item_id"]) | st.text(max_size=8),
    short_text | st.sampled_from(["page_view", "add_to_cart", "2024-05-01T10:00:00Z", "1714557600000"]),
    max_size=8,
)
raw_queries = st.lists(st.sampled_from([*"ab=&%+;?/ 019FfEeDd", "é", "💥", "%00", "%ZZ", "%E9", "%F0%9F"])).map("".join)


@hostile(150)
@given(
    params=pixel_params,
    raw_query=raw_queries,
    use_raw=st.booleans(),
    key=st.sampled_from(["valid", "", "pzw_unknown", "x" * 100, "é"]),
    origin=st.sampled_from([None, "https://shop.example", "https://evil.example", "null", "💥"]),
    referer=st.none() | short_text,
)
def test_the_pixel_always_answers_the_gif(source, params, raw_query, use_raw, key, origin, referer):
    client = APIClient(raise_request_exception=False)
    write_key = source.write_key if key == "valid" else key
    if use_raw:
        # The last `k` wins, so the generated query never hides which key is sent.
        path = f"/p.gif?{raw_query}&k={write_key}"
    else:
        path = "/p.gif?" + urlencode({**params, "k": write_key}, errors="surrogatepass")
    headers = {}
    if origin is not None:
        headers["HTTP_ORIGIN"] = origin
    if referer is not None:
        headers["HTTP_REFERER"] = referer

    response = client.get(path, **headers)

    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "image/gif"
    assert response.content == GIF
    assert len(response.content) == 43


# --- properties: mixed batches -------------------------------------------------------------------------------------

safe_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
safe_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(safe_text, kids, max_size=3),
    max_leaves=8,
)
safe_objects = st.dictionaries(safe_text, safe_json, max_size=4)
visitor_ids = st.sampled_from(["anon-1", "anon-2", "anon-3"]) | st.uuids().map(str)


@st.composite
def good_events(draw, flavour: str) -> dict:
    """A valid event without its message id, which the test gives it (unique across examples)."""
    when = datetime.now(UTC) + timedelta(seconds=draw(st.integers(-30 * 86400, 600)))
    timestamp = draw(st.sampled_from([when.isoformat(), int(when.timestamp() * 1000), None]))
    properties = draw(safe_objects)
    if flavour == "native":
        raw = {"type": draw(st.sampled_from(["page_view", "add_to_cart", "purchase", "identify", "group"]))}
        raw["anonymous_id"] = draw(visitor_ids)
        if draw(st.booleans()):
            raw["user_id"] = draw(st.sampled_from(["user-1", "user-2"]))
        raw["traits"] = draw(safe_objects)
        raw["context"] = {"page": {"url": draw(st.sampled_from(["https://shop.example/p/1", "x", "http://[::1"]))}}
    else:
        kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
        raw = {"type": kind, "anonymousId": draw(visitor_ids)}
        if kind == "track":
            raw["event"] = draw(st.sampled_from(["Order Completed", "Product Added", "Custom Thing"]))
        if kind in ("alias", "group") or draw(st.booleans()):
            raw["userId"] = draw(st.sampled_from(["user-1", "user-2"]))
        if kind == "alias":
            raw["previousId"] = draw(visitor_ids)
        if kind == "group":
            raw["groupId"] = "acme"
        raw["traits"] = draw(safe_objects)
        raw["context"] = {"library": {"name": "hypothesis"}, "timezone": draw(st.sampled_from(["Europe/Paris", "x"]))}
    raw["properties"] = properties
    if timestamp is not None:
        raw["timestamp"] = timestamp
    return raw


NATIVE_DEFECTS = {
    # name: (field after `events[i]`, how to break a good event)
    "not_an_object": ("", None),
    "no_ids": (".anonymous_id", lambda e: {k: v for k, v in e.items() if k not in ("anonymous_id", "user_id")}),
    "type_not_a_string": (".type", lambda e: {**e, "type": 5}),
    "type_empty": (".type", lambda e: {**e, "type": "   "}),
    "type_too_long": (".type", lambda e: {**e, "type": "t" * 101}),
    "id_an_object": (".anonymous_id", lambda e: {**e, "anonymous_id": {"id": 1}}),
    "id_a_boolean": (".anonymous_id", lambda e: {**e, "anonymous_id": True}),
    "id_too_long": (".anonymous_id", lambda e: {**e, "anonymous_id": "a" * 129}),
    "id_with_nul": (".user_id", lambda e: {**e, "user_id": "u\x00"}),
    "message_id_too_long": (".message_id", lambda e: {**e, "message_id": "m" * 101}),
    "timestamp_far_future": (".timestamp", lambda e: {**e, "timestamp": now_iso(timedelta(days=3))}),
    "timestamp_before_2000": (".timestamp", lambda e: {**e, "timestamp": "1999-12-31T23:59:59Z"}),
    "timestamp_garbage": (".timestamp", lambda e: {**e, "timestamp": "yesterday"}),
    "timestamp_an_object": (".timestamp", lambda e: {**e, "timestamp": {"at": 1}}),
    "timestamp_epoch_overflow": (".timestamp", lambda e: {**e, "timestamp": 1e300}),
    "properties_a_list": (".properties", lambda e: {**e, "properties": [1, 2]}),
    "properties_with_nul": (".properties.note", lambda e: {**e, "properties": {"note": "a\x00b"}}),
    "context_a_string": (".context", lambda e: {**e, "context": "web"}),
    "traits_with_nul_key": (".traits", lambda e: {**e, "traits": {"k\x00": 1}}),
    "alias_without_previous_id": (".previous_id", lambda e: {**e, "type": "alias"}),
    "too_large": ("", lambda e: {**e, "properties": {"blob": "x" * 40_000}}),
}
SEGMENT_DEFECTS = {
    "not_an_object": ("", None),
    "unknown_type": (".type", lambda e: {**e, "type": "purchase"}),
    "no_ids": (".anonymousId", lambda e: {k: v for k, v in e.items() if k not in ("anonymousId", "userId")}),
    "track_without_event": (".event", lambda e: {**e, "type": "track", "event": ""}),
    "group_without_group_id": (".groupId", lambda e: {**e, "type": "group", "groupId": None}),
    "alias_without_previous_id": (".previousId", lambda e: {**e, "type": "alias", "userId": "u-9"}),
    "timestamp_far_future": (".timestamp", lambda e: {**e, "timestamp": now_iso(timedelta(days=3))}),
    "timestamp_garbage": (".timestamp", lambda e: {**e, "timestamp": []}),
    "properties_a_number": (".properties", lambda e: {**e, "properties": 7}),
    "traits_with_nul": (".traits.name", lambda e: {**e, "traits": {"name": "\x00"}}),
    "too_large": ("", lambda e: {**e, "properties": {"blob": "é" * 20_000}}),
}


@st.composite
def bad_events(draw, flavour: str) -> tuple[object, str, str]:
    """(event, field suffix expected in `rejected`, defect name): one defect on an otherwise good event."""
    defects = NATIVE_DEFECTS if flavour == "native" else SEGMENT_DEFECTS
    name = draw(st.sampled_from(sorted(defects)))
    suffix, breaker = defects[name]
    if breaker is None:
        small = st.none() | st.booleans() | numbers | short_text
        return draw(small | st.lists(small, max_size=2)), suffix, name
    base = (
        {"type": "page_view", "anonymous_id": "anon-bad", "timestamp": now_iso()}
        if flavour == "native"
        else {"type": "page", "anonymousId": "anon-bad", "timestamp": now_iso()}
    )
    return breaker(base), suffix, name


def mixed_batches(flavour: str):
    return st.tuples(
        st.lists(good_events(flavour), max_size=6), st.lists(bad_events(flavour), max_size=4), st.randoms()
    ).filter(lambda t: t[0] or t[1])


@dataclass
class Batch:
    endpoint: str
    list_name: str
    body: dict
    good_ids: dict[int, str]  # index -> message id
    bad: dict[int, tuple[str, str, str | None]]  # index -> (expected field, defect, message id)

    def expected_status(self) -> int:
        if not self.bad:
            return 200
        if self.good_ids:
            return 207
        return 413 if all(defect == "too_large" for _, defect, _ in self.bad.values()) else 400


def assemble(flavour: str, goods: list[dict], bads: list[tuple], rnd) -> Batch:
    """Interleave good and bad events in one request body, each with a message id unique to this run."""
    run = uuid.uuid4().hex[:16]
    list_name, id_key = ("events", "message_id") if flavour == "native" else ("batch", "messageId")
    items = [("good", g) for g in goods] + [("bad", b) for b in bads]
    rnd.shuffle(items)
    events, good_ids, bad = [], {}, {}
    for index, (kind, item) in enumerate(items):
        if kind == "good":
            good_ids[index] = f"{run}-{index}"
            events.append({**item, id_key: good_ids[index]})
            continue
        raw, suffix, defect = item
        message_id = None
        if isinstance(raw, dict):
            raw = {id_key: f"{run}-bad-{index}", **raw}
            message_id = raw[id_key][:100]
        events.append(raw)
        bad[index] = (f"{list_name}[{index}]{suffix}", defect, message_id)
    if flavour == "native":
        return Batch("/api/v1/events", list_name, {"events": events}, good_ids, bad)
    return Batch("/v1/batch", list_name, {"batch": events, "context": {"ip": "203.0.113.9"}}, good_ids, bad)


@hostile(120)
@pytest.mark.parametrize("flavour", ["native", "segment"])
@given(batch=st.data())
def test_mixed_batch_stores_every_good_event_and_names_every_bad_one(api, source, flavour, batch):
    sent = assemble(flavour, *batch.draw(mixed_batches(flavour), label="goods, bads, order"))

    response = post_json(api, sent.endpoint, sent.body)

    answer = assert_well_formed(response)
    assert response.status_code == sent.expected_status(), answer
    assert stored(source, sent.good_ids.values()) == set(sent.good_ids.values())
    assert stored(source, [m for _, _, m in sent.bad.values() if m]) == set()
    assert (answer["accepted"], answer["duplicates"]) == (len(sent.good_ids), 0)
    rejected = {r["index"]: r for r in answer["rejected"]}
    assert set(rejected) == set(sent.bad)
    for index, (field, _, message_id) in sent.bad.items():
        assert rejected[index]["field"] == field, rejected[index]
        assert rejected[index]["message_id"] == message_id
        assert rejected[index]["error"]


@hostile(60)
@pytest.mark.parametrize("flavour", ["native", "segment"])
@given(batch=st.data())
def test_retrying_a_batch_stores_nothing_more_and_reports_the_duplicates(api, source, flavour, batch):
    sent = assemble(flavour, *batch.draw(mixed_batches(flavour), label="goods, bads, order"))
    first = post_json(api, sent.endpoint, sent.body)
    assert_well_formed(first)
    events_before = Event.objects.filter(source=source).count()
    profile_events_before = sum(Profile.objects.values_list("event_count", flat=True))

    again = post_json(api, sent.endpoint, sent.body)

    answer = assert_well_formed(again)
    assert again.status_code == first.status_code == sent.expected_status()
    assert Event.objects.filter(source=source).count() == events_before
    assert sum(Profile.objects.values_list("event_count", flat=True)) == profile_events_before
    assert (answer["accepted"], answer["duplicates"]) == (len(sent.good_ids), len(sent.good_ids))
    assert {r["index"] for r in answer["rejected"]} == set(sent.bad)


# --- explicit examples ---------------------------------------------------------------------------------------------


def test_malformed_json_is_a_400_saying_line_and_column(api):
    raw = b'{"events": [\n  {"type": "page_view",}\n]}'

    response = api.post("/api/v1/events", raw, content_type="application/json")

    body = assert_well_formed(response)
    assert response.status_code == 400
    assert "line 2 column 24" in body["message"]


def test_an_event_without_ids_is_rejected_at_its_anonymous_id(api, source):
    response = api.post("/api/v1/events", {"events": [{"type": "page_view", "message_id": "m-1"}]}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 400
    assert body["rejected"] == [
        {
            "index": 0,
            "message_id": "m-1",
            "field": "events[0].anonymous_id",
            "error": "anonymous_id or user_id is required",
        }
    ]
    assert not Event.objects.exists()


def test_a_timestamp_far_in_the_future_is_rejected_at_its_field(api):
    response = api.post("/api/v1/events", {"events": [event(timestamp=now_iso(timedelta(days=2)))]}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 400
    assert body["rejected"][0]["field"] == "events[0].timestamp"
    assert "future" in body["rejected"][0]["error"]
    assert not Event.objects.exists()


def test_an_event_over_32_kb_alone_is_413(api):
    big = event(properties={"blob": "x" * django_settings.INGEST_MAX_EVENT_BYTES})

    response = api.post("/api/v1/events", {"events": [big]}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 413
    assert body["rejected"][0]["field"] == "events[0]"
    assert not Event.objects.exists()


def test_an_event_over_32_kb_next_to_a_good_one_is_rejected_alone(api, source):
    big = event(n=1, properties={"blob": "x" * django_settings.INGEST_MAX_EVENT_BYTES})

    response = api.post("/api/v1/events", {"events": [event(n=0), big]}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 207
    assert [(r["index"], r["field"], r["message_id"]) for r in body["rejected"]] == [
        (1, "events[1]", big["message_id"])
    ]
    assert stored(source, [event(n=0)["message_id"], big["message_id"]]) == {event(n=0)["message_id"]}


def test_a_body_over_500_kb_is_413_and_stores_nothing(api):
    events = [event(n=i, properties={"blob": "x" * 20_000}) for i in range(30)]

    response = api.post("/api/v1/events", {"events": events}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 413
    assert "over the limit" in body["message"]
    assert not Event.objects.exists()


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_is_accepted(api, source, encoding, pack):
    raw = json.dumps({"events": [event(n=i) for i in range(3)]}).encode()

    response = api.post("/api/v1/events", pack(raw), content_type="application/json", HTTP_CONTENT_ENCODING=encoding)

    assert_well_formed(response)
    assert response.status_code == 200
    assert Event.objects.filter(source=source).count() == 3


def test_a_gzip_bomb_is_413_and_stores_nothing(api):
    bomb = gzip.compress(b'{"events": [' + b" " * (10 * 1024 * 1024) + b"]}")
    assert len(bomb) < django_settings.INGEST_MAX_BATCH_BYTES

    response = api.post("/api/v1/events", bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")

    body = assert_well_formed(response)
    assert response.status_code == 413
    assert "decompressed" in body["message"]
    assert not Event.objects.exists()


def test_a_body_that_is_not_gzip_despite_its_header_is_400(api):
    response = api.post("/v1/track", b'{"event": "x"}', content_type="application/json", HTTP_CONTENT_ENCODING="gzip")

    body = assert_well_formed(response)
    assert response.status_code == 400
    assert "decompressed" in body["message"]


def test_json_nested_too_deeply_is_400(api):
    deep = b'{"event": "x", "anonymousId": "a", "properties": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"

    response = api.post("/v1/track", deep, content_type="application/json")

    body = assert_well_formed(response)
    assert response.status_code == 400
    assert "nested" in body["message"]


def test_an_origin_the_source_does_not_allow_is_403(api, source):
    response = api.post("/api/v1/events", {"events": [event()]}, format="json", HTTP_ORIGIN="https://evil.example")

    body = assert_well_formed(response)
    assert response.status_code == 403
    assert "evil.example" in body["message"]
    assert not Event.objects.exists()
    allowed = api.post("/api/v1/events", {"events": [event()]}, format="json", HTTP_ORIGIN="https://shop.example")
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.parametrize(
    "endpoint, body, headers",
    [
        ("/api/v1/events", {"events": [event()]}, {"HTTP_X_WRITE_KEY": "pzw_nope"}),
        ("/v1/track", {"event": "x", "anonymousId": "a"}, {"HTTP_AUTHORIZATION": "Basic cHp3X25vcGU6"}),
        ("/v1/batch", {"writeKey": "pzw_nope", "batch": [{"type": "page", "anonymousId": "a"}]}, {}),
    ],
    ids=["header", "basic_auth", "body_write_key"],
)
def test_an_unknown_write_key_is_401(source, endpoint, body, headers):
    response = APIClient().post(endpoint, body, format="json", **headers)

    answer = assert_well_formed(response)
    assert response.status_code == 401
    assert "write key" in answer["message"]
    assert not Event.objects.exists()


def test_no_write_key_at_all_is_401(source):
    response = APIClient().post("/v1/batch", {"batch": [{"type": "page", "anonymousId": "a"}]}, format="json")

    assert_well_formed(response)
    assert response.status_code == 401
    assert not Event.objects.exists()


# --- once crashed: each of these was a 500 before its fix ------------------------------------------------------------


def test_a_lone_surrogate_is_rejected_and_the_good_events_are_kept(api, source):
    good = event(n=0)
    raw = json.dumps({"events": [good, event(n=1, properties={"name": "\ud800"})]}).encode()

    response = api.post("/api/v1/events", raw, content_type="application/json")

    body = assert_well_formed(response)
    assert response.status_code == 207
    assert body["rejected"][0]["field"].startswith("events[1].properties")
    assert stored(source, [good["message_id"]]) == {good["message_id"]}


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_a_400(api, literal):
    raw = b'{"events": [{"type": "x", "anonymous_id": "a", "properties": {"price": ' + literal + b"}}]}"

    response = api.post("/api/v1/events", raw, content_type="application/json")

    assert_well_formed(response)
    assert response.status_code == 400


def test_an_integer_of_5000_digits_is_a_400(api):
    raw = b'{"events": [{"type": "x", "anonymous_id": "a", "properties": {"n": ' + b"9" * 5000 + b"}}]}"

    response = api.post("/api/v1/events", raw, content_type="application/json")

    assert_well_formed(response)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "timestamp, clock", [("9999-12-31T23:59:59.999Z", "behind"), ("0001-01-01T00:00:00Z", "ahead")]
)
def test_an_extreme_timestamp_with_sent_at_is_rejected_at_its_field(api, source, timestamp, clock):
    # A sender whose clock is a second off: the shift pushes the time past datetime's range.
    sent = now_iso(timedelta(seconds=-1 if clock == "behind" else 1))
    good = {"type": "page", "anonymousId": "a", "messageId": "good-1", "timestamp": sent}
    bad = {"type": "page", "anonymousId": "a", "messageId": "bad-1", "timestamp": timestamp}

    response = api.post("/v1/batch", {"batch": [good, bad], "sentAt": sent}, format="json")

    body = assert_well_formed(response)
    assert response.status_code == 207
    assert body["rejected"][0]["field"] == "batch[1].timestamp"
    assert stored(source, ["good-1", "bad-1"]) == {"good-1"}


def test_a_country_whose_upper_case_is_longer_does_not_lose_the_event(api, source):
    payload = event(context={"location": {"country": "ßx"}})

    response = api.post("/api/v1/events", {"events": [payload]}, format="json")

    assert_well_formed(response)
    assert response.status_code == 200
    assert stored(source, [payload["message_id"]]) == {payload["message_id"]}


def test_revenues_summing_past_a_trillion_do_not_block_the_visitor(api, source):
    first = event("purchase", n=1, properties={"revenue": 999_999_999_999})
    second = event("purchase", n=2, properties={"revenue": 999_999_999_999})
    page = event("page_view", n=3)
    assert api.post("/api/v1/events", {"events": [first]}, format="json").status_code == 200

    response = api.post("/api/v1/events", {"events": [second, page]}, format="json")

    assert_well_formed(response)
    assert response.status_code == 200
    assert stored(source, [second["message_id"], page["message_id"]]) == {second["message_id"], page["message_id"]}


def test_the_pixel_answers_the_gif_when_revenues_overflow(source):
    client = APIClient(raise_request_exception=False)
    query = f"k={source.write_key}&e=purchase&a=rich&revenue=999999999999"

    responses = [client.get(f"/p.gif?{query}&m=order-{i}") for i in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    assert responses[1].content == GIF


@pytest.mark.parametrize("where", ["pixel", "query", "body", "header"])
def test_a_write_key_with_a_nul_character_is_an_unknown_key(source, where):
    client = APIClient(raise_request_exception=False)
    call = {"type": "page", "anonymousId": "a"}
    if where == "pixel":
        response = client.get("/p.gif?k=%00&a=x")
        assert (response.status_code, response.content) == (200, GIF)
        return
    if where == "query":
        response = client.post("/v1/track?writeKey=%00", {"event": "x", "anonymousId": "a"}, format="json")
    elif where == "body":
        response = client.post("/v1/batch", {"writeKey": "pzw\x00", "batch": [call]}, format="json")
    else:
        response = client.post("/v1/batch", {"batch": [call]}, format="json", HTTP_X_WRITE_KEY="pzw\x00")

    assert_well_formed(response)
    assert response.status_code == 401


def test_a_rejected_message_id_with_a_lone_surrogate_is_echoed_safely(api, source):
    good = event(n=7)
    raw = json.dumps({"events": [{"type": "x", "message_id": "\ud800"}, good]})

    response = api.post("/api/v1/events", raw, content_type="application/json")

    body = assert_well_formed(response)
    assert response.status_code == 207
    assert body["rejected"][0]["message_id"] == "\ud800"
    assert stored(source, [good["message_id"]]) == {good["message_id"]}

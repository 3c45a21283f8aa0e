"""PII masking of event payloads: realistic payloads, values that must survive untouched, and hostile input."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.masking import MaskingPolicy, mask_event, mask_value

NO_POLICY = MaskingPolicy()
FRANCE = MaskingPolicy(default_region="FR")
UNITED_STATES = MaskingPolicy(default_region="US")


def test_order_completed_customer_email_is_masked_and_the_order_kept():
    properties = {
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": 27.50,
        "revenue": 25.00,
        "shipping": 3,
        "tax": 2,
        "discount": 2.5,
        "coupon": "hasbros",
        "currency": "USD",
        "email": "Ann.Smith+orders@example.co.uk",
        "customer": {"name": "Ann", "contact": "reach me at ann@example.com or ann.smith@mail.example.org"},
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition", "price": 19},
            {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game", "price": 3},
        ],
    }

    masked, count = mask_value(properties, NO_POLICY)

    assert count == 3
    assert masked["email"] == "[email]"
    assert masked["customer"] == {"name": "Ann", "contact": "reach me at [email] or [email]"}
    assert {key: value for key, value in masked.items() if key not in ("email", "customer")} == {
        key: value for key, value in properties.items() if key not in ("email", "customer")
    }


@pytest.mark.parametrize(
    ("text", "policy", "masked"),
    [
        ("Rappelez-moi au 06 12 34 56 78 avant 18h", FRANCE, "Rappelez-moi au [phone] avant 18h"),
        ("06.12.34.56.78", FRANCE, "[phone]"),
        ("0612345678", FRANCE, "[phone]"),
        ("(415) 555-2671", UNITED_STATES, "[phone]"),
        ("Call (415) 555-2671 ext. 12 after 5pm", UNITED_STATES, "Call [phone] after 5pm"),
        ("+44 20 7946 0958", NO_POLICY, "[phone]"),
        ("+44 20 7946 0958", FRANCE, "[phone]"),
        ("tel:+33612345678", NO_POLICY, "tel:[phone]"),
        (
            "https://shop.example/callback?phone=%2B44%2020%207946%200958&x=1",
            NO_POLICY,
            "https://shop.example/callback?phone=[phone]&x=1",
        ),
    ],
)
def test_checkout_phone_numbers_are_masked(text, policy, masked):
    assert mask_value(text, policy) == (masked, 1)


@pytest.mark.parametrize("text", ["06 12 34 56 78", "(415) 555-2671"])
def test_national_numbers_need_a_region(text):
    assert mask_value(text, NO_POLICY) == (text, 0)


def test_checkout_form_masks_every_phone_field():
    form = {
        "shipping": {"phone": "06 12 34 56 78", "city": "Paris", "zip": "75011"},
        "billing": {"phone": "+44 20 7946 0958", "zip": "SW1A 1AA"},
        "alternates": ["07 98 76 54 32", "+1 415-555-2671"],
    }

    masked, count = mask_value(form, FRANCE)

    assert count == 4
    assert masked == {
        "shipping": {"phone": "[phone]", "city": "Paris", "zip": "75011"},
        "billing": {"phone": "[phone]", "zip": "SW1A 1AA"},
        "alternates": ["[phone]", "[phone]"],
    }


def test_card_number_in_notes_is_masked_next_to_an_order_id_that_fails_luhn():
    notes = "Please charge 4111 1111 1111 1111 (exp 12/28) for order 4000123456789001, thanks"

    assert mask_value(notes, NO_POLICY) == ("Please charge [card] (exp 12/28) for order 4000123456789001, thanks", 1)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4111-1111-1111-1111", "[card]"),
        ("5555555555554444", "[card]"),
        ("amex 3782 822463 10005", "amex [card]"),
        ("4111 1111 1111 1111 2 items", "[card] 2 items"),
        ("qty 2 4111 1111 1111 1111", "qty 2 [card]"),
        ("4111 1111 1111 1111 5555 5555 5555 4444", "[card] [card]"),
    ],
)
def test_card_numbers_are_masked_however_they_are_written(text, masked):
    assert mask_value(text, NO_POLICY)[0] == masked


def test_numeric_card_is_masked_but_other_long_numbers_are_kept():
    payload = {"card": 4111111111111111, "as_float": 4111111111111111.0, "order": 4000123456789001, "ts": 1764460800006}

    masked, count = mask_value(payload, NO_POLICY)

    # 1764460800006 passes Luhn: a millisecond timestamp is kept because no card starts with 1.
    assert masked == {"card": "[card]", "as_float": "[card]", "order": 4000123456789001, "ts": 1764460800006}
    assert count == 2


def test_support_chat_ip_addresses_are_masked():
    message = (
        "Hi, checkout fails from my office (203.0.113.195) and from home [2001:db8:85a3::8a2e:370:7334]:443, "
        "also via fe80::1%eth0 and ::ffff:192.0.2.1. Order 2026-11-30 at 12:00:00, total 19.99."
    )

    masked, count = mask_value({"message": message}, NO_POLICY)

    assert masked["message"] == (
        "Hi, checkout fails from my office ([ip]) and from home [[ip]]:443, "
        "also via [ip]%eth0 and [ip]. Order 2026-11-30 at 12:00:00, total 19.99."
    )
    assert count == 4


def test_a_bare_dotted_quad_is_an_ip_but_a_product_version_is_not():
    payload = {
        "server": "131.0.0.0",
        "host": "http://10.0.0.1/admin",
        "path": "/lookup/10.0.0.2",
        "browser": "Chrome/131.0.0.0",
        "app": "Mozilla/5.0 (X11) Chrome/131.0.0.0 Safari/537.36",
        "build": "v1.2.3.4",
    }

    masked, count = mask_value(payload, NO_POLICY)

    assert masked == {**payload, "server": "[ip]", "host": "http://[ip]/admin", "path": "/lookup/[ip]"}
    assert count == 3


def test_page_context_is_masked_and_machine_context_left_alone():
    user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36"
    context = {
        "page": {
            "url": "https://shop.example/reset?email=ann%40example.com&token=abc",
            "path": "/reset",
            "search": "?email=ann%40example.com&token=abc",
            "referrer": "https://mail.example/inbox?from=bob@example.org",
            "title": "Reset password",
            "hash": "#+44 20 7946 0958",
        },
        "campaign": {"source": "newsletter", "medium": "email", "content": "sent to ann@example.com"},
        "traits": {"email": "ann@example.com", "plan": "pro"},
        "userAgent": user_agent,
        "ip": "203.0.113.0",
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "screen": {"width": 1920, "height": 1080},
    }

    properties, traits, masked, count = mask_event(
        properties={"step": 2}, traits={"email": "ann@example.com"}, context=context, policy=NO_POLICY
    )

    assert properties == {"step": 2}
    assert traits == {"email": "[email]"}
    assert masked["page"] == {
        "url": "https://shop.example/reset?email=[email]&token=abc",
        "path": "/reset",
        "search": "?email=[email]&token=abc",
        "referrer": "https://mail.example/inbox?from=[email]",
        "title": "Reset password",
        "hash": "#+44 20 7946 0958",
    }
    assert masked["campaign"] == {"source": "newsletter", "medium": "email", "content": "sent to [email]"}
    assert masked["traits"] == {"email": "[email]", "plan": "pro"}
    for key in ("userAgent", "ip", "library", "locale", "timezone", "screen"):
        assert masked[key] == context[key]
    assert count == 6


def test_denylisted_names_are_redacted_at_any_depth_whatever_their_case():
    policy = MaskingPolicy(denylist=frozenset({"password", "Address"}))
    properties = {
        "password": "hunter2",
        "Address": {"street": "12 rue de la Paix", "zip": "75002"},
        "items": [{"sku": "sku-000123", "PASSWORD": ["x", "y"]}],
        "address_type": "home",
    }

    masked, count = mask_value(properties, policy)

    assert masked == {
        "password": "[redacted]",
        "Address": "[redacted]",
        "items": [{"sku": "sku-000123", "PASSWORD": "[redacted]"}],
        "address_type": "home",
    }
    assert count == 3


def test_denylist_applies_to_traits_but_not_to_campaign_or_page_fields():
    policy = MaskingPolicy(denylist=frozenset({"name", "title"}))

    _, traits, context, count = mask_event(
        properties={},
        traits={"name": "Ann Smith"},
        context={"campaign": {"name": "winter-sale"}, "page": {"title": "Shoes"}, "traits": {"Name": "Ann"}},
        policy=policy,
    )

    assert traits == {"name": "[redacted]"}
    assert context == {
        "campaign": {"name": "winter-sale"},
        "page": {"title": "Shoes"},
        "traits": {"Name": "[redacted]"},
    }
    assert count == 2


KEPT = [
    "19.99",
    "1299.00",
    "€1 299,99",
    "2026-11-30",
    "30.11.2026",
    "11/30/2026",
    "2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00.123+01:00",
    "2026-11-30 12:00:00",
    "12:30",
    "1764460800006",
    "1764460800",
    "123e4567-e89b-12d3-a456-426614174000",
    # UUIDs whose leading groups are a Luhn-valid 16-digit run (recommendation tokens carried back by events).
    "69535629-8131-4159-8cff-6a3be9548ef7",
    "41059357-3113-4279-99ab-256c0fa9e5af",
    "41111111-1111-1111-8111-111111111111",
    "sku-000123",
    "SKU-0612345678",
    "ord-4155552671",
    "order 4000123456789001",
    "50314b8e9bcf000000000000",
    "75011",
    "94103-1234",
    "SW1A 1AA",
    "v1.2.3.4",
    "1.2.3",
    "1.2.3.4.5",
    "999.1.1.1",
    "Chrome/131.0.0.0",
    "00:1A:2B:3C:4D:5E",
    "std::vector",
    "@shop on social",
    "user@localhost",
    "Size 42, qty 3, 2 for 1",
    "Trail Running Shoe | Northwind",
    "https://shop.example/p/sku-000123?utm_source=newsletter&utm_medium=email&utm_campaign=2026-11",
    "",
]


@pytest.mark.parametrize("policy", [NO_POLICY, FRANCE, UNITED_STATES], ids=["no-region", "FR", "US"])
def test_ordinary_values_are_never_touched(policy):
    values = [*KEPT, 42, 19.99, -4111111111111111, 10**25, True, False, None, 0.0]

    assert mask_value(values, policy) == (values, 0)


def _luhn_completed(digits: str) -> str:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return digits + str(-total % 10)


@settings(max_examples=200, deadline=None)
@given(
    head=st.text(alphabet="3456", min_size=1, max_size=1),
    digits=st.text(alphabet="0123456789", min_size=14, max_size=14),
    tail=st.uuids(version=4),
    policy=st.sampled_from([NO_POLICY, FRANCE, UNITED_STATES]),
)
def test_a_uuid_is_never_taken_for_a_card_or_a_phone(head, digits, tail, policy):
    # A uuid4 is all-digit in its first 16 characters about once in 2,000 and then often passes Luhn.
    run = _luhn_completed(head + digits)
    token = f"{run[:8]}-{run[8:12]}-{run[12:16]}-{str(tail)[19:]}"

    assert mask_value({"rec_token": token, "ids": [str(tail)]}, policy) == ({"rec_token": token, "ids": [str(tail)]}, 0)


def test_masking_returns_new_objects_and_leaves_the_input_alone():
    properties = {"contact": {"emails": ["ann@example.com"]}, "tags": ["vip"]}
    context = {"page": {"url": "https://shop.example/?e=ann%40example.com"}, "library": {"name": "analytics.js"}}
    before = copy.deepcopy((properties, context))

    masked, _, masked_context, _ = mask_event(properties=properties, traits={}, context=context, policy=NO_POLICY)
    masked["tags"].append("changed")
    masked_context["library"]["name"] = "changed"

    assert (properties, context) == before


def test_policy_normalizes_admin_input():
    policy = MaskingPolicy(denylist=["Password", "ADDRESS"], default_region="fr")

    assert policy.denylist == frozenset({"password", "address"})
    assert policy.default_region == "FR"
    assert MaskingPolicy(default_region="").default_region is None
    with pytest.raises(ValueError, match="XX"):
        MaskingPolicy(default_region="XX")


def test_masking_module_runs_without_django():
    check = "import sys, privacy.masking; sys.exit('django' in sys.modules)"
    root = Path(__file__).resolve().parent.parent

    assert subprocess.run([sys.executable, "-c", check], cwd=root, check=False).returncode == 0


# Hostile and arbitrary payloads: fragments of PII and near-PII glued together with arbitrary text, so that the
# detectors' boundaries meet each other and their own placeholders.
FRAGMENTS = [
    "ann@example.com",
    "%40",
    "@",
    "a.b",
    "+44 20 7946 0958",
    "06 12 34 56 78",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "4111111111111111",
    "203.0.113.195",
    "2001:db8::1",
    "::",
    ":",
    ".",
    "-",
    " ",
    "%2B",
    "%20",
    "1",
    "0",
    "2026-11-30",
    "[ip]",
    "[card]",
    "x",
    "/",
]
texts = st.one_of(
    st.text(max_size=20),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=8).map("".join),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([4111111111111111, 4111111111111111.0, 1764460800006])
    | st.floats(allow_nan=False)
    | texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.one_of(st.sampled_from(["password", "Email", "phone"]), st.text(max_size=5)), children, max_size=4
        )
    ),
    max_leaves=20,
)
policies = st.sampled_from([NO_POLICY, FRANCE, UNITED_STATES, MaskingPolicy(denylist=frozenset({"password"}))])


def assert_same_shape(original, masked, policy):
    if isinstance(original, dict):
        assert isinstance(masked, dict)
        assert list(masked) == list(original)
        for key, value in original.items():
            if key.casefold() in policy.denylist:
                assert masked[key] == "[redacted]"
            else:
                assert_same_shape(value, masked[key], policy)
    elif isinstance(original, list):
        assert isinstance(masked, list)
        assert len(masked) == len(original)
        for value, masked_value in zip(original, masked, strict=True):
            assert_same_shape(value, masked_value, policy)
    elif isinstance(original, bool) or original is None:
        assert masked is original
    elif isinstance(original, int | float):
        assert masked == "[card]" or (masked == original and type(masked) is type(original))
    else:
        assert isinstance(masked, str)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, policy=policies)
def test_masking_any_json_keeps_its_shape_and_is_idempotent(value, policy):
    masked, count = mask_value(value, policy)

    assert count >= 0
    assert_same_shape(value, masked, policy)
    assert mask_value(masked, policy) == (masked, 0)
    if count == 0:
        assert masked == value


@settings(max_examples=150, deadline=None)
@given(
    context=st.dictionaries(
        st.sampled_from(["page", "campaign", "traits", "userAgent", "library", "ip", "screen", "locale"]), json_values
    ),
    policy=policies,
)
def test_masking_any_context_leaves_machine_parts_alone(context, policy):
    _, _, masked, count = mask_event(properties={}, traits={}, context=context, policy=policy)

    assert list(masked) == list(context)
    for key in ("userAgent", "library", "ip", "screen", "locale"):
        assert masked.get(key) == context.get(key)
    assert mask_event(properties={}, traits={}, context=masked, policy=policy)[3] == 0
    if count == 0:
        assert masked == context

"""The hot endpoints' JSON renderer gives the JSON DRF's JSONRenderer gives (non-ASCII text as
UTF-8 rather than escaped: the same document)."""

import json
import uuid
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from rest_framework.renderers import JSONRenderer

from personalization.api.renderers import FastJSONRenderer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)  # fmt: skip


@given(json_values.filter(lambda v: v is not None))
def test_same_json_as_drf(value):
    fast, drf = FastJSONRenderer().render(value), JSONRenderer().render(value)
    assert json.loads(fast) == json.loads(drf)


def test_a_served_list_renders_like_drf():
    payload = {
        "token": str(uuid.uuid4()),
        "placement": "home",
        "strategy": "cached",
        "personalized": True,
        "model_version": 3,
        "variant": "",
        "items": [{"id": "sku-1", "title": "Trail runner é", "price": "41.00", "categories": ["shoes"],
                   "score": 0.9365662336349487, "algorithm": "hybrid", "reason": "because you viewed X"}],
    }  # fmt: skip
    fast = FastJSONRenderer().render(payload)
    assert json.loads(fast) == json.loads(JSONRenderer().render(payload)) == payload
    assert "Trail runner é".encode() in fast


def test_types_orjson_does_not_know_fall_back_to_drf():
    value = {"price": Decimal("1.50")}
    assert json.loads(FastJSONRenderer().render(value)) == json.loads(JSONRenderer().render(value))
    assert FastJSONRenderer().render(None) == JSONRenderer().render(None) == b""

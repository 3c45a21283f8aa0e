"""The rule builder in a real browser: a marketer builds a rule by clicking, sees the preview count follow,
sees a validation error at its node, and saves; the JSON textarea stays in sync both ways."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from segments.models import Segment
from tests.browser import close_page, eventually, open_page
from tests.factories import SourceFactory
from tracking.models import Profile

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, live_server, transactional_db):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    now = timezone.now()
    source = SourceFactory()
    for i in range(7):
        Profile.objects.create(
            first_seen_at=now - timedelta(days=30),
            last_seen_at=now - timedelta(days=i),
            event_count=2 + i,
            session_count=1 + i,
            purchase_count=1 if i < 3 else 0,
            revenue=80 if i < 3 else 0,
            last_source=source,
            last_device_type="mobile" if i % 2 else "desktop",
        )
    page = open_page(browser)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/segments/segment/add/")
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", "pw-boss-123")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_selector("[data-rule-builder]")
    yield page
    close_page(page)


def count(page) -> str:
    return page.inner_text("[data-preview-count]").strip()


def rule_json(page) -> dict:
    return json.loads(page.input_value("textarea[name=rule]"))


def test_building_a_rule_by_clicking_updates_the_preview_and_saves(page):
    # The starting rule (at least one event) matches everyone.
    eventually(page, lambda: count(page) == "7", what="the first preview")
    condition = page.locator(".pz-condition").first
    condition.locator("[data-role=field]").select_option("purchase_count")
    # The value was cleared with the field change: the server says so at that node.
    error = page.locator(".pz-condition .pz-error").first
    eventually(page, lambda: "a value is required" in (error.text_content() or ""), what="the node error")
    condition = page.locator(".pz-condition").first
    condition.locator("[data-role=value]").fill("1")
    eventually(page, lambda: count(page) == "3", what="the count of buyers")
    assert page.locator(".pz-error").count() == 0

    # A second condition, in the same (all) group: buyers on mobile.
    page.locator("[data-role=add-condition]").first.click()
    second = page.locator(".pz-condition").nth(1)
    second.locator("[data-role=kind]").select_option("context")
    second = page.locator(".pz-condition").nth(1)
    second.locator("[data-role=op]").select_option("eq")
    second.locator("[data-role=value]").fill("mobile")
    eventually(page, lambda: count(page) == "1", what="the count of mobile buyers")
    assert len(page.locator("[data-preview-sample] a").all()) == 1
    assert rule_json(page) == {
        "all": [
            {"kind": "profile", "field": "purchase_count", "op": "gte", "value": 1},
            {"kind": "context", "field": "device_type", "op": "eq", "value": "mobile"},
        ]
    }

    page.fill("input[name=key]", "mobile-buyers")
    page.fill("input[name=name]", "Mobile buyers")
    built = rule_json(page)
    page.locator("button[form=segment_form][name=_save]").click()
    page.wait_for_url("**/admin/segments/segment/")
    assert Segment.objects.get(key="mobile-buyers").rule == built


def test_typing_json_rebuilds_the_builder(page):
    eventually(page, lambda: count(page) == "7", what="the first preview")
    page.locator(".pz-json summary").click()
    rule = {"not": {"kind": "context", "field": "device_type", "op": "eq", "value": "mobile"}}
    page.fill("textarea[name=rule]", json.dumps(rule))
    eventually(page, lambda: count(page) == "4", what="the count of non-mobile profiles")
    assert page.locator("[data-role=group-mode]").first.input_value() == "not"
    assert page.locator(".pz-condition [data-role=value]").first.input_value() == "mobile"

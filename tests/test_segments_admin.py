"""The segments admin, as a marketer uses it (Django test client, logged-in superuser): the builder page,
live preview, validation errors at their node, templates in one click, insights, recompute and retrain."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from segments.models import ScoreModel, Segment, SegmentMembership, SegmentMembershipChange, SegmentSizeSnapshot
from segments.services.definitions import segment_create
from segments.templates import TEMPLATES
from tests.factories import SourceFactory
from tracking.models import Profile

BUYERS = {"kind": "profile", "field": "purchase_count", "op": "gte", "value": 1}


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    client.force_login(user)
    return client


@pytest.fixture
def profiles(db):
    now = timezone.now()
    source = SourceFactory()
    made = []
    for i in range(6):
        made.append(
            Profile.objects.create(
                first_seen_at=now - timedelta(days=40),
                last_seen_at=now - timedelta(days=i),
                event_count=3 + i,
                session_count=1 + i,
                purchase_count=i % 2,
                revenue=50 * (i % 2),
                last_source=source,
                last_device_type="mobile" if i < 3 else "desktop",
            )
        )
    return made


def preview(client, rule):
    return client.post(reverse("admin:segments_segment_preview"), {"rule": rule}, content_type="application/json")


def test_add_page_renders_the_builder_from_the_catalogue(admin_client):
    response = admin_client.get(reverse("admin:segments_segment_add"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "data-rule-builder" in html and "segments/builder.js" in html
    catalogue = json.loads(
        re.search(r'data-catalogue="([^"]*)"', html).group(1).replace("&quot;", '"').replace("&amp;", "&")
    )
    assert set(catalogue["kinds"]) == {"trait", "profile", "event", "context", "consent", "segment", "score"}
    assert 'name="rule"' in html  # the JSON stays in the form for power users


def test_preview_counts_matching_profiles_and_links_a_sample(admin_client, profiles):
    response = preview(admin_client, BUYERS)
    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 3 and body["errors"] == []
    assert {p["id"] for p in body["sample"]} == {p.pk for p in profiles if p.purchase_count}
    assert body["sample"][0]["url"] == reverse("admin:tracking_profile_change", args=[body["sample"][0]["id"]])

    narrower = {"all": [BUYERS, {"kind": "context", "field": "device_type", "op": "eq", "value": "mobile"}]}
    assert preview(admin_client, narrower).json()["count"] == 1


def test_preview_points_at_the_bad_node(admin_client, profiles):
    rule = {"all": [BUYERS, {"kind": "profile", "field": "session_count", "op": "between", "value": [5, 2]}]}
    response = preview(admin_client, rule)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "$.all[1].value", "message": "low (5) is greater than high (2)"}]
    assert response.json()["count"] is None


def test_preview_refuses_a_body_that_is_not_a_rule_request(admin_client, db):
    url = reverse("admin:segments_segment_preview")
    broken = admin_client.post(url, "{not json", content_type="application/json")
    assert broken.status_code == 400 and broken.json()["errors"][0]["message"].startswith("body is not JSON")
    missing = admin_client.post(url, {"kind": "profile"}, content_type="application/json")
    assert missing.status_code == 400 and missing.json()["errors"][0]["message"] == 'expected {"rule": {...}}'


def test_preview_needs_a_staff_login(client, profiles):
    response = preview(client, BUYERS)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_saving_a_segment_goes_through_the_services(admin_client, profiles):
    response = admin_client.post(
        reverse("admin:segments_segment_add"),
        {"key": "buyers", "name": "Buyers", "description": "", "status": "active", "rule": json.dumps(BUYERS)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    segment = Segment.objects.get(key="buyers")
    assert segment.rule == BUYERS
    # In the embedded/eager default the recompute ran at once; with a broker it is queued.
    change = reverse("admin:segments_segment_change", args=[segment.pk])
    new_rule = {"kind": "profile", "field": "purchase_count", "op": "eq", "value": 0}
    response = admin_client.post(
        change, {"name": "Non-buyers", "description": "", "status": "active", "rule": json.dumps(new_rule)}
    )
    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.name, segment.rule, segment.version, segment.key) == ("Non-buyers", new_rule, 2, "buyers")


def test_validation_error_shows_the_node_path_on_the_form(admin_client, profiles):
    bad = {"any": [BUYERS, {"kind": "event", "event": "purchase", "within": 0, "op": "gte", "value": 1}]}
    response = admin_client.post(
        reverse("admin:segments_segment_add"),
        {"key": "bad", "name": "Bad", "status": "active", "rule": json.dumps(bad)},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "$.any[1].within: expected a number of days from 1 to 3650" in html
    errors = re.search(r'data-errors="([^"]*)"', html).group(1).replace("&quot;", '"')
    assert json.loads(errors)[0]["path"] == "$.any[1].within"  # the builder marks that node
    assert not Segment.objects.filter(key="bad").exists()


def test_unknown_segment_reference_is_refused_on_the_form(admin_client, db):
    response = admin_client.post(
        reverse("admin:segments_segment_add"),
        {
            "key": "inner",
            "name": "Inner",
            "status": "active",
            "rule": json.dumps({"kind": "segment", "segment": "nope"}),
        },
    )
    assert response.status_code == 200
    assert "refers to unknown segment nope" in response.content.decode()


def test_a_key_the_api_would_refuse_is_refused_on_the_form(admin_client, db):
    response = admin_client.post(
        reverse("admin:segments_segment_add"),
        {"key": "BigSpenders", "name": "Big", "status": "active", "rule": json.dumps(BUYERS)},
    )
    assert response.status_code == 200
    assert "is not a valid key: lower-case letters" in response.content.decode()
    assert not Segment.objects.exists()


def test_template_page_lists_all_seven_and_adds_one_in_a_click(admin_client, db):
    page = admin_client.get(reverse("admin:segments_segment_templates"))
    assert page.status_code == 200
    for name, _, _ in TEMPLATES.values():
        assert name in page.content.decode()
    assert len(TEMPLATES) == 7

    response = admin_client.post(reverse("admin:segments_segment_templates"), {"template": "cart_abandoners"})
    segment = Segment.objects.get(template="cart_abandoners")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:segments_segment_change", args=[segment.pk])
    assert segment.rule == TEMPLATES["cart_abandoners"][2] and segment.key == "cart-abandoners"
    again = admin_client.post(reverse("admin:segments_segment_templates"), {"template": "cart_abandoners"})
    assert again.status_code == 302 and Segment.objects.filter(template="cart_abandoners").count() == 2
    assert "Added already" in admin_client.get(reverse("admin:segments_segment_templates")).content.decode()


def test_change_page_shows_size_over_time_members_and_history(admin_client, profiles):
    segment = segment_create(key="buyers", name="Buyers", rule=BUYERS)
    now = timezone.now()
    for days, size in ((3, 1), (2, 2), (1, 3)):
        SegmentSizeSnapshot.objects.create(segment=segment, at=now - timedelta(days=days), size=size)
    buyer = next(p for p in profiles if p.purchase_count)
    SegmentMembership.objects.get_or_create(segment=segment, profile=buyer, defaults={"entered_at": now})
    SegmentMembershipChange.objects.create(segment=segment, profile=buyer, kind="entered", at=now, via="batch")

    html = admin_client.get(reverse("admin:segments_segment_change", args=[segment.pk])).content.decode()
    assert 'data-type="line"' in html and "Size over time" in html
    chart = re.search(r'data-type="line" data-value="([^"]*)"', html).group(1).replace("&quot;", '"')
    assert json.loads(chart)["datasets"][0]["data"][-3:] == [1, 2, 3]
    assert reverse("admin:tracking_profile_change", args=[buyer.pk]) in html
    assert str(buyer.uuid)[:8] in html and "entered" in html


def test_recompute_now_asks_then_queues(admin_client, profiles, django_capture_on_commit_callbacks):
    segment = segment_create(key="buyers", name="Buyers", rule=BUYERS)
    url = reverse("admin:segments_segment_recompute_now", args=[segment.pk])
    assert "Yes, go ahead" in admin_client.get(url).content.decode()
    with (
        mock.patch("segments.tasks.segment_recompute_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(url)
    assert response.status_code == 302
    delay.assert_called_once_with(segment.pk, segment.version)


def test_score_models_show_held_out_auc_and_clusters_and_retrain_queues(
    admin_client, db, django_capture_on_commit_callbacks
):
    now = timezone.now()
    ScoreModel.objects.create(
        name="churn_risk", version=3, trained_at=now, is_live=True,
        metrics={"auc": 0.8731, "n_train": 300, "n_test": 100, "churn_rate": 0.31, "profiles": 420},
    )  # fmt: skip
    rfm = ScoreModel.objects.create(
        name="rfm_segment", version=2, trained_at=now, is_live=True,
        metrics={"k": 2, "clusters": [
            {"index": 0, "name": "frequent high spenders", "size": 12, "recency_days": 2, "visits": 9,
             "revenue": 900},
            {"index": 1, "name": "lapsed occasional browsers", "size": 40, "recency_days": 90, "visits": 1,
             "revenue": 0},
        ]},
    )  # fmt: skip
    listing = admin_client.get(reverse("admin:segments_scoremodel_changelist")).content.decode()
    assert "0.873" in listing and "frequent high spenders (12)" in listing
    detail = admin_client.get(reverse("admin:segments_scoremodel_change", args=[rfm.pk])).content.decode()
    assert "lapsed occasional browsers" in detail and "Days since last visit" in detail

    url = reverse("admin:segments_scoremodel_retrain_now")
    with mock.patch("segments.tasks_ml.train_scores_task.delay") as delay:
        assert admin_client.get(url).status_code == 200
        delay.assert_not_called()  # a link never starts work
        with django_capture_on_commit_callbacks(execute=True):
            assert admin_client.post(url).status_code == 302
    delay.assert_called_once_with()


def test_builder_hints_offer_the_live_cluster_names(admin_client, db):
    ScoreModel.objects.create(
        name="rfm_segment", version=1, trained_at=timezone.now(), is_live=True,
        metrics={"clusters": [{"index": 0, "name": "new browsers", "size": 3}]},
    )  # fmt: skip
    html = admin_client.get(reverse("admin:segments_segment_add")).content.decode()
    assert '<datalist id="pz-hints-labels"><option value="new browsers">' in html


def test_staff_without_segment_permissions_cannot_preview_or_retrain(client, profiles):
    clerk = get_user_model().objects.create_user("clerk", "clerk@example.com", "pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    assert preview(client, BUYERS).status_code == 403
    assert client.post(reverse("admin:segments_scoremodel_retrain_now")).status_code == 403

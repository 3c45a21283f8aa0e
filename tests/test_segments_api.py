"""Segments API: create/read/update with validation errors that name the node, preview, members,
templates, a profile's segments (secret key) and the visitor's own segment keys (public key)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from segments.models import Segment, SegmentMembership
from segments.templates import TEMPLATES
from tests.test_segments_compiler import make_profile

pytestmark = pytest.mark.django_db

FR = {"kind": "trait", "name": "country", "op": "eq", "value": "FR"}


@pytest.fixture(autouse=True)
def _no_background_recompute(monkeypatch):
    """Creating a segment queues its recompute on commit; these tests look at the API, not the worker."""
    queued = []
    monkeypatch.setattr("segments.tasks.segment_recompute_task.delay", lambda *args: queued.append(args))
    return queued


def test_create_then_read_and_list_a_segment(client_secret):
    response = client_secret.post("/api/v1/segments", {"key": "french", "name": "French", "rule": FR}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["key"], body["version"], body["status"], body["rule"]) == ("french", 1, "active", FR)
    assert client_secret.get("/api/v1/segments/french").json()["name"] == "French"
    assert [s["key"] for s in client_secret.get("/api/v1/segments").json()["results"]] == ["french"]


def test_a_bad_rule_is_refused_with_the_path_of_the_bad_node(client_secret):
    rule = {"all": [FR, {"kind": "trait", "name": "country", "op": "in", "value": "FR"}]}
    response = client_secret.post("/api/v1/segments", {"key": "x", "name": "x", "rule": rule}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_rule"
    assert body["message"] == "$.all[1].value: expected a list for operator in"
    assert body["errors"] == [{"field": "$.all[1].value", "error": "expected a list for operator in"}]
    assert not Segment.objects.exists()


def test_a_cycle_between_segments_is_refused(client_secret):
    client_secret.post("/api/v1/segments", {"key": "a", "name": "a", "rule": FR}, format="json")
    client_secret.post(
        "/api/v1/segments", {"key": "b", "name": "b", "rule": {"kind": "segment", "segment": "a"}}, format="json"
    )
    response = client_secret.patch("/api/v1/segments/a", {"rule": {"kind": "segment", "segment": "b"}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "segment_cycle"
    assert "a -> b -> a" in response.json()["message"]
    assert Segment.objects.get(key="a").rule == FR


def test_unknown_segment_reference_and_duplicate_key_are_refused(client_secret):
    unknown = client_secret.post(
        "/api/v1/segments", {"key": "a", "rule": {"kind": "segment", "segment": "nope"}}, format="json"
    )
    assert (unknown.status_code, unknown.json()["error"]) == (400, "unknown_segment")
    client_secret.post("/api/v1/segments", {"key": "a", "rule": FR}, format="json")
    again = client_secret.post("/api/v1/segments", {"key": "a", "rule": FR}, format="json")
    assert (again.status_code, again.json()["error"]) == (400, "duplicate_key")
    reserved = client_secret.post("/api/v1/segments", {"key": "preview", "rule": FR}, format="json")
    assert (reserved.status_code, reserved.json()["error"]) == (400, "invalid_key")


def test_patching_the_rule_bumps_the_version_and_queues_a_recompute(
    client_secret, _no_background_recompute, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client_secret.post("/api/v1/segments", {"key": "a", "name": "a", "rule": FR}, format="json")
        response = client_secret.patch(
            "/api/v1/segments/a", {"rule": {**FR, "value": "DE"}, "name": "Germans"}, format="json"
        )
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["name"]) == (2, "Germans")
    segment = Segment.objects.get(key="a")
    assert _no_background_recompute == [(segment.pk, 1), (segment.pk, 2)]
    renamed = client_secret.patch("/api/v1/segments/a", {"name": "G"}, format="json")
    assert renamed.json()["version"] == 2  # no new rule, no new version


def test_preview_counts_and_samples_without_saving(client_secret, source):
    for country in ("FR", "FR", "DE"):
        make_profile(source, traits={"country": country}, now=timezone.now())
    response = client_secret.post("/api/v1/segments/preview", {"rule": FR, "sample": 1}, format="json")
    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert len(response.json()["sample"]) == 1 and response.json()["sample"][0]["traits"] == {"country": "FR"}
    bad = client_secret.post("/api/v1/segments/preview", {"rule": {"any": []}}, format="json")
    assert bad.status_code == 400 and bad.json()["message"] == "$.any: expected at least one condition"
    assert not Segment.objects.exists()


def test_members_are_paginated_newest_first(client_secret, source):
    segment = Segment.objects.create(key="s", name="s", rule=FR)
    people = [make_profile(source) for _ in range(3)]
    now = timezone.now()
    for minutes, person in enumerate(people):
        SegmentMembership.objects.create(segment=segment, profile=person, entered_at=now.replace(minute=minutes))
    page = client_secret.get("/api/v1/segments/s/members?page_size=2").json()
    assert [m["profile"] for m in page["results"]] == [str(people[2].uuid), str(people[1].uuid)]
    rest = client_secret.get(page["next"]).json()
    assert [m["profile"] for m in rest["results"]] == [str(people[0].uuid)]
    assert client_secret.get("/api/v1/segments/nope/members").status_code == 404


def test_recompute_on_demand_is_queued_with_the_current_version(client_secret, _no_background_recompute):
    segment = Segment.objects.create(key="s", name="s", rule=FR, version=3)
    response = client_secret.post("/api/v1/segments/s/recompute")
    assert response.status_code == 202 and response.json() == {"queued": True, "version": 3}
    assert _no_background_recompute == [(segment.pk, 3)]


def test_templates_are_listed_and_added_with_one_call(client_secret):
    listed = client_secret.get("/api/v1/segments/templates").json()
    assert [t["key"] for t in listed] == list(TEMPLATES)
    first = client_secret.post("/api/v1/segments/from-template", {"template": "cart_abandoners"}, format="json")
    second = client_secret.post("/api/v1/segments/from-template", {"template": "cart_abandoners"}, format="json")
    assert (first.status_code, first.json()["key"], first.json()["template"]) == (
        201,
        "cart-abandoners",
        "cart_abandoners",
    )
    assert second.json()["key"] == "cart-abandoners-2"
    assert first.json()["rule"] == TEMPLATES["cart_abandoners"][2]
    unknown = client_secret.post("/api/v1/segments/from-template", {"template": "nope"}, format="json")
    assert unknown.status_code == 400 and "template" in unknown.json()["message"]


def test_a_profiles_segments_with_the_secret_key(client_secret, source):
    profile = make_profile(source)
    active = Segment.objects.create(key="b-active", name="a", rule=FR)
    paused = Segment.objects.create(key="a-paused", name="p", rule=FR, status=Segment.Status.PAUSED)
    for segment in (active, paused):
        SegmentMembership.objects.create(segment=segment, profile=profile, entered_at=timezone.now())
    response = client_secret.get(f"/api/v1/profiles/{profile.uuid}/segments")
    assert response.json() == {"segments": ["b-active"]}


def test_the_visitor_reads_their_own_segment_keys_with_the_public_key(
    client_public, client_secret, django_assert_max_num_queries
):
    client_public.post(
        "/api/v1/events",
        {"events": [{"type": "page_view", "anonymous_id": "me", "message_id": "m1"}]},
        format="json",
    )
    from tracking.models import Profile

    segment = Segment.objects.create(key="vip", name="vip", rule=FR)
    SegmentMembership.objects.create(
        segment=segment, profile=Profile.objects.get(identities__value="me"), entered_at=timezone.now()
    )
    client_public.get("/api/v1/segments/mine?anonymous_id=me")  # the write key is cached from now on
    with django_assert_max_num_queries(2):  # the profile by anonymous id, then its segment keys
        assert client_public.get("/api/v1/segments/mine?anonymous_id=me").json() == {"segments": ["vip"]}
    assert client_public.get("/api/v1/segments/mine?anonymous_id=stranger").json() == {"segments": []}
    assert client_public.get("/api/v1/segments/mine").status_code == 400
    # The public key reads nothing else.
    assert client_public.get("/api/v1/segments").status_code in (401, 403)
    assert client_public.post("/api/v1/segments/preview", {"rule": FR}, format="json").status_code in (401, 403)


def test_the_catalogue_describes_every_condition_kind(client_secret):
    body = client_secret.get("/api/v1/segments/catalogue").json()
    assert set(body["catalogue"]["kinds"]) == {"trait", "profile", "event", "context", "consent", "segment", "score"}
    assert body["schema"]["$defs"]["node"]

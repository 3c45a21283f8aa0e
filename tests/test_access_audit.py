"""Access audit: viewing or exporting a profile, in the admin or through the API, is logged."""

import pytest

from privacy.models import AccessLog
from privacy.services import subject_request_process
from tests.factories import event
from tracking.models import Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile(client_public):
    client_public.post("/api/v1/events", {"events": [event("page_view", user_id="c-1")]}, format="json")
    return Profile.objects.get()


def test_admin_view_of_a_profile_is_logged_with_the_user(admin_client, admin_user, profile):
    assert admin_client.get(f"/admin/tracking/profile/{profile.pk}/change/").status_code == 200
    entry = AccessLog.objects.get()
    assert (entry.actor, entry.channel, entry.action, entry.profile_uuid) == (
        admin_user.username,
        "admin",
        "view",
        profile.uuid,
    )


def test_api_reads_of_a_profile_and_its_timeline_are_logged_with_the_key(client_secret, profile, source):
    client_secret.get(f"/api/v1/profiles/{profile.uuid}")
    client_secret.get(f"/api/v1/profiles/{profile.uuid}/events")
    entries = list(AccessLog.objects.order_by("at").values_list("channel", "action", "detail", "profile_uuid"))
    assert entries == [("api", "view", "profile", profile.uuid), ("api", "view", "timeline", profile.uuid)]
    assert source.name in AccessLog.objects.first().actor


def test_export_and_erasure_are_logged(client_secret, profile, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        exported = client_secret.post("/api/v1/privacy/requests", {"kind": "export", "user_id": "c-1"}, format="json")
        erased = client_secret.post("/api/v1/privacy/requests", {"kind": "erase", "user_id": "c-1"}, format="json")
    subject_request_process(request_id=exported.json()["id"])
    subject_request_process(request_id=erased.json()["id"])
    actions = list(AccessLog.objects.order_by("at").values_list("action", "profile_uuid"))
    assert actions == [("export", profile.uuid), ("erase", profile.uuid)]
    assert not Profile.objects.exists()


def test_admin_shows_the_log_and_nobody_can_edit_it(admin_client, profile):
    admin_client.get(f"/admin/tracking/profile/{profile.pk}/change/")
    assert admin_client.get("/admin/privacy/accesslog/").status_code == 200
    entry = AccessLog.objects.get()
    assert admin_client.post(f"/admin/privacy/accesslog/{entry.pk}/delete/", {"post": "yes"}).status_code == 403


def test_data_inventory_page_for_the_privacy_audit(admin_client, client_public, source):
    source.retention_days = 30
    source.pii_denylist = ["password"]
    source.save()
    client_public.post(
        "/api/v1/consent", {"anonymous_id": "a", "purposes": {"analytics": True, "marketing": False}}, format="json"
    )
    page = admin_client.get("/admin/privacy/inventory/")
    assert page.status_code == 200
    text = page.content.decode()
    for expected in ("keyed hash (HMAC-SHA256", "Fernet", "30 days", "password", "analytics", "None open."):
        assert expected in text, expected
    coverage = {(c["purpose"], c["granted"], c["refused"]) for c in page.context["coverage"]}
    assert {("analytics", 1, 0), ("marketing", 0, 1)} <= coverage


def test_data_inventory_is_for_staff_only(client):
    assert client.get("/admin/privacy/inventory/").status_code == 302

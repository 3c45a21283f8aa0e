"""Secret keys (hashed, revocable), API schema and offline docs, health endpoints, admin pages."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.factories import event
from tracking.keys import secret_key_hash
from tracking.models import SecretKey
from tracking.services.sources import secret_key_revoke

pytestmark = pytest.mark.django_db


def test_secret_key_is_stored_only_as_hash(secret):
    stored = SecretKey.objects.get()
    assert stored.key_hash == secret_key_hash(secret)
    assert secret not in {stored.key_hash, stored.prefix, stored.name}


def test_revoked_secret_key_stops_working_at_once(secret, django_capture_on_commit_callbacks):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/profiles").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        secret_key_revoke(key=SecretKey.objects.get())
    response = client.get("/api/v1/profiles")
    assert response.status_code == 401
    assert response.json()["message"] == "unknown or revoked secret key"


def test_secret_key_can_send_server_side_events(client_secret):
    response = client_secret.post(
        "/api/v1/events", {"events": [event()]}, format="json", HTTP_ORIGIN="https://anything.example"
    )
    assert response.status_code == 200


def test_write_key_cannot_read_other_visitors(client_public):
    assert client_public.get("/api/v1/profiles").status_code in (401, 403)


def test_schema_is_served_and_docs_page_uses_local_assets(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/events", "/v1/track", "/v1/batch", "/api/v1/profiles/me", "/api/v1/import"):
        assert path in text
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "cdn." not in docs and "unpkg" not in docs
    assert "/static/drf_spectacular_sidecar/" in docs
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


@pytest.fixture
def admin_client_logged(client):
    user = get_user_model().objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_pages_show_sources_profiles_and_events(admin_client_logged, client_public, source):
    client_public.post("/api/v1/events", {"events": [event("add_to_cart", user_id="cust-1")]}, format="json")
    from tracking.models import Profile

    profile = Profile.objects.get()
    pages = {
        "/admin/": "Top event types",
        "/admin/tracking/source/": source.name,
        f"/admin/tracking/source/{source.pk}/change/": source.write_key,
        "/admin/tracking/profile/": str(profile.uuid),
        f"/admin/tracking/profile/{profile.pk}/change/": "add_to_cart",
        "/admin/tracking/event/": "add_to_cart",
        "/admin/tracking/profile/?q=cust-1": str(profile.uuid),
    }
    for url, expected in pages.items():
        response = admin_client_logged.get(url)
        assert response.status_code == 200, url
        assert expected in response.content.decode(), url


def test_admin_creates_secret_key_shown_once(admin_client_logged, source):
    response = admin_client_logged.post(
        "/admin/tracking/source/",
        {"action": "create_secret_key", "_selected_action": [source.pk]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    key = SecretKey.objects.get(source=source)
    assert key.prefix in page and "not shown again" in page


def test_dashboard_counts_what_arrived(admin_client_logged, client_public):
    client_public.post("/api/v1/events", {"events": [event("add_to_cart", n=i) for i in range(3)]}, format="json")
    response = admin_client_logged.get("/admin/")
    assert response.context["kpis"][0] == {"title": "Events, last 24 h", "value": "3"}
    assert response.context["top_types"]["rows"] == [["add_to_cart", "3"]]


def test_changing_a_sources_origins_in_admin_applies_at_once(
    admin_client_logged, source, client, django_capture_on_commit_callbacks
):
    def send():
        return client.post(
            "/api/v1/events",
            {"events": [event()]},
            content_type="application/json",
            HTTP_X_WRITE_KEY=source.write_key,
            HTTP_ORIGIN="https://new.example",
        )

    assert send().status_code == 403
    from tracking import selectors

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged.post(
            f"/admin/tracking/source/{source.pk}/change/",
            {
                "name": source.name,
                "allowed_origins": '["https://shop.example", "https://new.example/"]',
                "pii_denylist": "[]",
                "encrypted_traits": "[]",
                "consent_regime": "opt_out",
                "consent_policy_version": 1,
                "banner_title": "Your privacy",
                "banner_text": "Choose.",
                "cookie_days": 395,
                "is_active": "on",
                "secret_keys-TOTAL_FORMS": 0,
                "secret_keys-INITIAL_FORMS": 0,
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    selectors._local_sources.clear()  # another process: only the shared cache matters
    assert send().status_code == 200

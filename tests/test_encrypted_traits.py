"""Traits a source keeps are encrypted at rest: readable through the API, never in a database dump."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from privacy.models import EncryptedTrait
from tests.factories import event
from tracking.models import Event, Profile

pytestmark = pytest.mark.django_db

FIRST_NAME = "Zéphyrine"
EMAIL = "zephyrine.k@example.org"


@pytest.fixture
def keeping_source(source, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    source.encrypted_traits = ["first_name", "email"]
    source.save()
    return source


def identify(client, n=1, **traits):
    body = event("identify", anonymous_id="visitor", user_id="u-9", n=n, traits=traits)
    response = client.post("/api/v1/events", {"events": [body]}, format="json")
    assert response.status_code == 200, response.json()


def test_kept_traits_are_readable_through_the_api_and_nowhere_in_clear(keeping_source, client_public, client_secret):
    identify(client_public, first_name=FIRST_NAME, email=EMAIL, plan="plus")
    profile = Profile.objects.get()
    assert profile.traits == {"plan": "plus"}
    assert set(EncryptedTrait.objects.values_list("name", flat=True)) == {"first_name", "email"}
    assert Event.objects.get().properties == {"traits": {"plan": "plus"}}

    mine = client_public.get("/api/v1/profiles/me", {"anonymous_id": "visitor"}).json()
    assert mine["protected_traits"] == {"first_name": FIRST_NAME, "email": EMAIL}
    detail = client_secret.get(f"/api/v1/profiles/{profile.uuid}").json()
    assert detail["protected_traits"]["first_name"] == FIRST_NAME

    with connection.cursor() as cursor:
        for app in ("tracking", "privacy"):
            for model in apps.get_app_config(app).get_models():
                for needle in (FIRST_NAME, EMAIL, "phyrine"):
                    cursor.execute(
                        f"SELECT count(*) FROM {model._meta.db_table} t WHERE t::text ILIKE %s", [f"%{needle}%"]
                    )
                    assert cursor.fetchone()[0] == 0, (model, needle)


def test_a_later_value_replaces_the_kept_one(keeping_source, client_public):
    identify(client_public, n=1, first_name="Ann")
    identify(client_public, n=2, first_name="Anna")
    from privacy.selectors import encrypted_traits_read

    assert encrypted_traits_read(profile_id=Profile.objects.get().pk) == {"first_name": "Anna"}


def test_key_rotation_re_encrypts_so_the_old_key_can_go(keeping_source, client_public, settings):
    from privacy.selectors import encrypted_traits_read

    identify(client_public, first_name=FIRST_NAME)
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    old_token = EncryptedTrait.objects.get().token
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 1 traits" in out.getvalue()
    assert EncryptedTrait.objects.get().token != old_token
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]  # the old key is gone
    assert encrypted_traits_read(profile_id=Profile.objects.get().pk) == {"first_name": FIRST_NAME}


def test_kept_traits_follow_a_profile_merge(keeping_source, client_public):
    client_public.post(
        "/api/v1/events",
        {"events": [event("identify", anonymous_id="tablet", n=5, traits={"first_name": "Tab"})]},
        format="json",
    )
    identify(client_public, n=6, first_name="Main")  # visitor + u-9: another profile
    client_public.post(
        "/api/v1/events", {"events": [event("page_view", anonymous_id="tablet", user_id="u-9", n=7)]}, format="json"
    )
    profile = Profile.objects.get()
    assert list(EncryptedTrait.objects.values_list("profile_id", "name")) == [(profile.pk, "first_name")]

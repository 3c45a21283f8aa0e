"""Rotating the identifier hash key: returning users keep their profile; progress is observable."""

from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import event
from tracking.models import Event, Identity, Profile
from tracking.services.identity import identity_hash, key_fingerprint

pytestmark = pytest.mark.django_db

OLD, NEW = "o" * 40, "n" * 40


def send(client, *events):
    response = client.post("/api/v1/events", {"events": list(events)}, format="json")
    assert response.status_code == 200, response.json()


def test_rotated_key_rehashes_identities_on_use_and_keeps_the_profile(client_public, settings):
    settings.IDENTITY_HASH_KEY = OLD
    send(client_public, event("identify", anonymous_id="a1", user_id="u-42", traits={"email": "u42@example.com"}))
    profile = Profile.objects.get()
    assert Identity.objects.get(kind="user").key_id == key_fingerprint(OLD.encode())

    settings.IDENTITY_HASH_KEY, settings.IDENTITY_HASH_OLD_KEYS = NEW, [OLD]
    out = StringIO()
    call_command("identity_keys", stdout=out)
    assert "2 identities still hashed with old keys" in out.getvalue()

    # The user comes back on another device, known only by user id.
    send(client_public, event("purchase", anonymous_id="other-device", user_id="u-42", n=2))
    assert Profile.objects.count() == 1
    assert Event.objects.filter(profile=profile).count() == 2
    user = Identity.objects.get(kind="user")
    assert (user.value, user.key_id) == (identity_hash("u-42"), key_fingerprint(NEW.encode()))
    assert user.value != identity_hash("u-42", key=OLD.encode())
    out = StringIO()
    call_command("identity_keys", stdout=out)
    assert "1 identities still hashed with old keys" in out.getvalue()  # the email has not come back yet


def test_without_the_old_key_a_returning_user_looks_new(client_public, settings):
    settings.IDENTITY_HASH_KEY = OLD
    send(client_public, event("identify", anonymous_id="a1", user_id="u-7"))
    settings.IDENTITY_HASH_KEY, settings.IDENTITY_HASH_OLD_KEYS = NEW, []
    send(client_public, event("page_view", anonymous_id="a2", user_id="u-7", n=2))
    assert Profile.objects.count() == 2

"""Operator commands: create_source prints keys that work; seed_demo fills a storefront, idempotently."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tracking.models import Event, Profile, SecretKey, Source

pytestmark = pytest.mark.django_db


def test_create_source_prints_keys_that_authenticate():
    out = StringIO()
    call_command("create_source", "Shop", "--origin", "https://shop.example/", "--json", stdout=out)
    keys = json.loads(out.getvalue())
    assert keys["allowed_origins"] == ["https://shop.example"]
    source = Source.objects.get(name="Shop")
    assert source.write_key == keys["write_key"]
    stored = SecretKey.objects.get(source=source)
    assert keys["secret_key"] not in stored.key_hash and keys["secret_key"].startswith(stored.prefix)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['secret_key']}")
    assert client.get("/api/v1/profiles").status_code == 200


def test_create_source_refuses_duplicate_name():
    call_command("create_source", "Shop", stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_source", "Shop", stdout=StringIO())


def test_seed_demo_generates_a_storefront_and_is_idempotent():
    out = StringIO()
    call_command("seed_demo", "--visitors", "40", "--admin", stdout=out)
    events = Event.objects.count()
    types = set(Event.objects.values_list("type", flat=True))
    assert {"product_view", "add_to_cart", "purchase"} <= types
    assert Profile.objects.filter(session_count__gt=1).exists()
    assert Profile.objects.filter(purchase_count=0, event_stats__event_type="add_to_cart").exists()  # abandoned carts
    assert set(Profile.objects.values_list("last_device_type", flat=True)) >= {"desktop", "mobile"}
    assert "demo / demo-admin" in out.getvalue()
    call_command("seed_demo", "--visitors", "40", "--admin", stdout=StringIO())
    assert Event.objects.count() == events

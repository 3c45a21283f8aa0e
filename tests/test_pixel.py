"""The GIF pixel: always an image, events stored with a good key, refusals counted."""

import pytest

from tracking.models import Event, IngestRejection

pytestmark = pytest.mark.django_db


def test_pixel_stores_event_and_returns_43_byte_uncached_gif(client, source):
    response = client.get(
        "/p.gif",
        {"k": source.write_key, "e": "email_open", "u": "user-9", "m": "open-1", "campaign": "spring"},
        HTTP_REFERER="https://mail.example/",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert len(response.content) == 43 and response.content.startswith(b"GIF89a")
    assert "no-store" in response["Cache-Control"]
    stored = Event.objects.get()
    assert (stored.type, stored.message_id, stored.properties) == ("email_open", "open-1", {"campaign": "spring"})
    assert stored.user_hash and "user-9" not in stored.user_hash


def test_pixel_defaults_to_page_view_with_referer_as_page(client, source):
    client.get("/p.gif", {"k": source.write_key, "a": "anon-7"}, HTTP_REFERER="https://shop.example/p/1")
    stored = Event.objects.get()
    assert stored.type == "page_view" and stored.kind == "page"
    assert stored.context["page"]["url"] == "https://shop.example/p/1"


def test_pixel_with_bad_key_still_returns_gif_but_stores_nothing_and_counts(client, db):
    response = client.get("/p.gif", {"k": "pzw_wrong", "a": "x"})
    assert response.status_code == 200 and len(response.content) == 43
    assert not Event.objects.exists()
    assert IngestRejection.objects.get(reason="unknown_key", source=None).count == 1
    client.get("/p.gif", {"k": "pzw_wrong"})
    assert IngestRejection.objects.get(reason="unknown_key", source=None).count == 2


def test_pixel_with_invalid_event_returns_gif_and_counts_for_the_source(client, source):
    response = client.get("/p.gif", {"k": source.write_key})  # no anonymous or user id
    assert response.status_code == 200 and len(response.content) == 43
    assert not Event.objects.exists()
    assert IngestRejection.objects.get(source=source).reason == "invalid"

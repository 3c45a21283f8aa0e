"""Bulk import of historical events and access logs: same checks, exactly once, line-numbered errors."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from tracking.models import Event, Identity, Profile
from tracking.services.imports import access_log_visitor_id

pytestmark = pytest.mark.django_db

JSONL = "\n".join(
    [
        json.dumps(
            {"type": "page_view", "anonymous_id": "h1", "message_id": "i1", "timestamp": "2025-01-02T10:00:00Z"}
        ),
        json.dumps(
            {
                "type": "purchase",
                "anonymous_id": "h1",
                "message_id": "i2",
                "timestamp": "2025-01-02T10:05:00Z",
                "properties": {"revenue": 42},
            }
        ),
        "{not json",
        json.dumps({"type": "page_view", "message_id": "i3"}),
        "",
    ]
)
CSV = (
    "type,anonymous_id,message_id,timestamp,properties.item_id,properties.revenue,context\n"
    'product_view,c1,c-1,2025-03-01T09:00:00Z,sku-1,,"{""page"": {""url"": ""https://x.example/p""}}"\n'
    "purchase,c1,c-2,2025-03-01T09:10:00Z,sku-1,19.90,\n"
    "purchase,,c-3,2025-03-01T09:10:00Z,sku-1,19.90,\n"
)
LOG = "\n".join(
    [
        '203.0.113.9 - - [10/Oct/2025:13:55:36 +0000] "GET /shoes?page=2 HTTP/1.1" 200 2326 '
        '"https://www.google.com/" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36"',
        '203.0.113.9 - - [10/Oct/2025:13:55:37 +0000] "GET /static/app.css HTTP/1.1" 200 100 "-" "Mozilla/5.0"',
        '203.0.113.9 - - [10/Oct/2025:13:56:10 +0000] "GET /shoes/trail-runner HTTP/1.1" 200 5000 '
        '"https://shop.example/shoes" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36"',
        '66.249.66.1 - - [10/Oct/2025:13:57:00 +0000] "GET /shoes HTTP/1.1" 200 2326 "-" '
        '"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"',
        '198.51.100.4 - - [10/Oct/2025:14:00:00 +0000] "POST /cart HTTP/1.1" 302 0 "-" "Mozilla/5.0"',
        '198.51.100.4 - - [10/Oct/2025:14:00:01 +0000] "GET /missing HTTP/1.1" 404 0 "-" "Mozilla/5.0"',
        "garbage line",
    ]
)


def test_jsonl_import_api_stores_good_lines_and_names_bad_ones(client_secret):
    response = client_secret.generic("POST", "/api/v1/import", JSONL, content_type="application/x-ndjson")
    assert response.status_code == 207
    body = response.json()
    assert (body["lines"], body["accepted"], body["rejected_count"]) == (4, 2, 2)
    fields = [r["field"] for r in body["rejected"]]
    assert fields == ["line 3", "line 4.anonymous_id"]
    assert Profile.objects.get().revenue == 42
    again = client_secret.generic("POST", "/api/v1/import", JSONL, content_type="application/x-ndjson").json()
    assert again["duplicates"] == 2 and Event.objects.count() == 2


def test_import_needs_a_secret_key(client_public):
    response = client_public.generic("POST", "/api/v1/import", JSONL, content_type="application/x-ndjson")
    assert response.status_code in (401, 403)
    assert not Event.objects.exists()


def test_csv_import_command_maps_property_columns(source, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    out, err = StringIO(), StringIO()
    call_command("import_events", str(path), "--source", source.name, stdout=out, stderr=err)
    assert "accepted 2" in out.getvalue()
    assert "line 4.anonymous_id" in err.getvalue()
    view = Event.objects.get(message_id="c-1")
    assert view.properties == {"item_id": "sku-1"} and view.context["page"]["url"] == "https://x.example/p"
    assert str(Event.objects.get(message_id="c-2").value) == "19.90"


def test_access_log_import_keeps_page_views_of_people_without_raw_ip(source, tmp_path):
    path = tmp_path / "access.log"
    path.write_text(LOG)
    out = StringIO()
    call_command(
        "import_access_log", str(path), "--source", source.name, "--site-url", "https://shop.example", stdout=out
    )
    events = list(Event.objects.order_by("timestamp"))
    assert [e.context["page"]["path"] for e in events] == ["/shoes", "/shoes/trail-runner"]
    assert events[0].traffic_source == "organic_search"
    assert events[0].context["page"]["url"] == "https://shop.example/shoes?page=2"
    assert {e.ip_truncated for e in events} == {"203.0.113.0"}
    assert events[0].context["ip"] == "203.0.113.0"
    visitor = access_log_visitor_id("203.0.113.9", events[0].context["userAgent"])
    assert Identity.objects.get(kind="anonymous").value == visitor and "203.0.113.9" not in visitor
    assert Profile.objects.get().event_count == 2
    call_command(
        "import_access_log", str(path), "--source", source.name, "--site-url", "https://shop.example", stdout=out
    )
    assert Event.objects.count() == 2


def test_access_log_visitors_never_consented_so_an_opt_in_source_stores_none(tmp_path):
    from tests.factories import SourceFactory

    opt_in = SourceFactory(consent_regime="opt_in")
    path = tmp_path / "access.log"
    path.write_text(LOG)
    out = StringIO()
    call_command("import_access_log", str(path), "--source", opt_in.name, stdout=out)
    assert "not stored without consent 2" in out.getvalue()
    assert not Event.objects.exists() and not Profile.objects.exists()

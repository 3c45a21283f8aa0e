"""Enrichment at ingest: device from the user agent, traffic source, local time, IP truncation."""

from datetime import UTC, datetime

import pytest

from tracking.enrich import enrich, local_time, parse_user_agent, traffic_source, truncate_ip

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148"
ANDROID_PHONE = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"
ANDROID_TABLET = "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari"
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148 Safari/604.1"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("agent", "device", "os"),
    [
        (IPHONE, "mobile", "iOS"),
        (ANDROID_PHONE, "mobile", "Android"),
        (ANDROID_TABLET, "tablet", "Android"),
        (IPAD, "tablet", "iOS"),
        (WINDOWS, "desktop", "Windows"),
        (MAC, "desktop", "Mac OS X"),
        (BOT, "bot", ""),
        ("", "", ""),
    ],
)
def test_device_type_and_os_from_user_agent(agent, device, os):
    parsed = parse_user_agent(agent)
    assert parsed[0] == device
    if os:
        assert parsed[1] == os


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({}, "direct"),
        ({"page": {"url": "https://shop.example/a", "referrer": "https://www.google.fr/"}}, "organic_search"),
        ({"page": {"url": "https://shop.example/a?gclid=abc", "referrer": "https://www.google.com/"}}, "paid"),
        ({"campaign": {"medium": "CPC", "source": "bing"}}, "paid"),
        ({"page": {"url": "https://shop.example/?utm_medium=email&utm_source=news"}}, "email"),
        ({"campaign": {"medium": "email"}}, "email"),
        ({"page": {"referrer": "https://l.instagram.com/"}}, "social"),
        ({"page": {"referrer": "https://t.co/xyz"}}, "social"),
        ({"page": {"url": "https://shop.example/b", "referrer": "https://blog.example.org/post"}}, "referral"),
        ({"page": {"url": "https://shop.example/b", "referrer": "https://shop.example/a"}}, "direct"),
        ({"page": {"referrer": "not a url"}}, "direct"),
        ({"page": "garbage", "campaign": 5}, "direct"),
    ],
)
def test_traffic_source_classes(context, expected):
    assert traffic_source(context) == expected


def test_local_hour_uses_visitor_timezone_and_falls_back_to_utc():
    at = datetime(2026, 6, 1, 22, 30, tzinfo=UTC)  # a Monday
    assert local_time(at, "Asia/Tokyo") == (7, 1)
    assert local_time(at, "Not/AZone") == (22, 0)
    assert local_time(at, None) == (22, 0)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.200", "203.0.113.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("not-an-ip", None),
    ],
)
def test_ip_truncated_before_storage(ip, expected):
    assert truncate_ip(ip) == expected


def test_event_context_wins_over_request_and_country_is_validated():
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    result = enrich(
        {"userAgent": IPHONE, "ip": "192.0.2.9", "location": {"country": "fr"}},
        at,
        request_user_agent=WINDOWS,
        request_ip="198.51.100.1",
        request_country="",
    )
    assert (result.device_type, result.ip_truncated, result.country) == ("mobile", "192.0.2.0", "FR")
    trusted = enrich({}, at, request_user_agent=WINDOWS, request_ip="", request_country="DE")
    assert (trusted.device_type, trusted.country, trusted.ip_truncated) == ("desktop", "DE", None)
    junk = enrich({"location": {"country": "France"}}, at, request_user_agent="", request_ip="", request_country="")
    assert junk.country == ""

"""Context enrichment at ingest: device, OS and browser, local time, traffic source, country, IP prefix.

Pure Python over the event's context and the request's headers; no Django.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ua_parser

MOBILE_OS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "HarmonyOS"}
DESKTOP_OS = {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD", "Debian", "macOS"}
TABLET_FAMILIES = ("iPad", "Kindle", "Tablet", "Tab", "Nexus 7", "Nexus 9", "Nexus 10")

SEARCH_ENGINES = (
    "google.",
    "bing.",
    "yahoo.",
    "duckduckgo.",
    "baidu.",
    "yandex.",
    "ecosia.",
    "qwant.",
    "naver.",
    "seznam.",
    "startpage.",
    "brave.com",
    "ask.com",
)
SOCIAL_SITES = (
    "facebook.",
    "fb.me",
    "instagram.",
    "t.co",
    "twitter.",
    "x.com",
    "linkedin.",
    "lnkd.in",
    "pinterest.",
    "reddit.",
    "tiktok.",
    "youtube.",
    "whatsapp.",
    "snapchat.",
    "threads.net",
    "bsky.app",
    "mastodon.",
    "vk.com",
    "weibo.",
)
PAID_MEDIA = {
    "cpc",
    "ppc",
    "paid",
    "paidsearch",
    "paid_search",
    "paid-search",
    "paidsocial",
    "paid_social",
    "paid-social",
    "display",
    "cpm",
    "cpv",
    "banner",
    "retargeting",
    "sem",
}
EMAIL_MEDIA = {"email", "e-mail", "e_mail", "newsletter", "mail"}
SOCIAL_MEDIA = {"social", "social-network", "social_network", "sm", "social-media", "social_media"}
PAID_CLICK_IDS = ("gclid", "gbraid", "wbraid", "dclid", "msclkid", "ttclid", "li_fat_id", "twclid")

TRAFFIC_SOURCES = ("direct", "organic_search", "paid", "social", "email", "referral")


@dataclass(slots=True)
class Enrichment:
    device_type: str = ""
    os: str = ""
    browser: str = ""
    country: str = ""
    traffic_source: str = ""
    local_hour: int | None = None
    local_weekday: int | None = None
    ip_truncated: str | None = None


@lru_cache(maxsize=8192)
def parse_user_agent(user_agent: str) -> tuple[str, str, str]:
    """(device type, OS family, browser family) of a user-agent string."""
    if not user_agent:
        return "", "", ""
    result = ua_parser.parse(user_agent[:512])
    os_family = result.os.family if result.os else ""
    browser = result.user_agent.family if result.user_agent else ""
    device = result.device
    if device is not None and device.family == "Spider":
        device_type = "bot"
    elif device is not None and (
        (device.brand or "").endswith("Tablet") or any(name in device.family for name in TABLET_FAMILIES)
    ):
        device_type = "tablet"
    elif os_family == "Android" and "Mobile" not in user_agent:
        # Android tablets drop the "Mobile" token (Google's own guidance for telling them apart).
        device_type = "tablet"
    elif os_family in MOBILE_OS or (device is not None and device.family == "iPhone"):
        device_type = "mobile"
    elif os_family in DESKTOP_OS:
        device_type = "desktop"
    else:
        device_type = "other"
    return device_type, os_family[:50], browser[:50]


def truncate_ip(ip: str) -> str | None:
    """Keep the network part only: /24 for IPv4, /48 for IPv6. Never store a full address."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except (ValueError, AttributeError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def local_time(timestamp: datetime, timezone_name: object) -> tuple[int, int]:
    """Hour and weekday (0 = Monday) where the visitor is, or in UTC when we don't know."""
    zone = _zone(timezone_name) if isinstance(timezone_name, str) and timezone_name else None
    local = timestamp.astimezone(zone) if zone else timestamp
    return local.hour, local.weekday()


def _host(url: object) -> str:
    if not isinstance(url, str) or not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    labels = host.split(".")
    candidates = {".".join(labels[i:]) for i in range(len(labels))}
    for pattern in patterns:
        if pattern.endswith("."):
            if any(c.startswith(pattern) for c in candidates):
                return True
        elif pattern in candidates:
            return True
    return False


def traffic_source(context: dict) -> str:
    """Classify how the visitor arrived: direct, organic_search, paid, social, email or referral."""
    campaign = context.get("campaign") if isinstance(context.get("campaign"), dict) else {}
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    medium = str(campaign.get("medium") or "").lower().strip()
    url = page.get("url") if isinstance(page.get("url"), str) else ""
    if medium in PAID_MEDIA:
        return "paid"
    if url and "?" in url:
        try:
            query = parse_qs(urlsplit(url).query)
        except ValueError:
            query = {}
        if any(key in query for key in PAID_CLICK_IDS):
            return "paid"
        if not medium and query.get("utm_medium"):
            medium = query["utm_medium"][0].lower()
            if medium in PAID_MEDIA:
                return "paid"
    if medium in EMAIL_MEDIA:
        return "email"
    if medium in SOCIAL_MEDIA:
        return "social"
    referrer_host = _host(page.get("referrer"))
    if not referrer_host:
        return "email" if str(campaign.get("source") or "").lower() in EMAIL_MEDIA else "direct"
    if referrer_host == _host(url):
        return "direct"
    if _matches(referrer_host, SEARCH_ENGINES):
        return "organic_search"
    if _matches(referrer_host, SOCIAL_SITES):
        return "social"
    return "referral"


def enrich(
    context: dict, timestamp: datetime, *, request_user_agent: str, request_ip: str, request_country: str
) -> Enrichment:
    """Derive the stored enrichment columns; values the event's context carries win over the request's."""
    user_agent = context.get("userAgent") or context.get("user_agent") or request_user_agent
    device_type, os_family, browser = parse_user_agent(user_agent if isinstance(user_agent, str) else "")
    ip = context.get("ip") if isinstance(context.get("ip"), str) else request_ip
    country = request_country
    location = context.get("location")
    if not country and isinstance(location, dict) and isinstance(location.get("country"), str):
        country = location["country"]
    country = country.strip().upper()
    if not (len(country) == 2 and country.isascii() and country.isalpha()):
        country = ""
    hour, weekday = local_time(timestamp, context.get("timezone"))
    return Enrichment(
        device_type=device_type,
        os=os_family,
        browser=browser,
        country=country,
        traffic_source=traffic_source(context),
        local_hour=hour,
        local_weekday=weekday,
        ip_truncated=truncate_ip(ip) if ip else None,
    )

"""The JS snippet in a real browser: the demo storefront in headless Chromium sends events that end up
stored, enriched and linked to the visitor's first-party anonymous id."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from tests.browser import close_page, eventually, open_page
from tracking.models import Event, Identity, Profile
from tracking.services.identity import identity_hash
from tracking.services.sources import source_create
from tracking.views import snippet

# --- the served script (no browser) ---------------------------------------------------------------


def test_minified_snippet_is_under_10_kb():
    response = Client().get("/pz.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert 1000 < len(response.content) < 10_240


def test_versioned_snippet_is_cached_forever():
    version = snippet()[0]
    response = Client().get(f"/pz/{version}/pz.js")
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
    assert response.content == Client().get("/pz.js").content


# --- the demo storefront in headless Chromium -------------------------------------------------------


@pytest.fixture
def demo_source(browser, live_server, transactional_db):
    # Opt-out: the snippet has no consent banner yet, so an opt-in source would (rightly) store nothing.
    return source_create(name="Demo storefront", allowed_origins=[live_server.url], consent_regime="opt_out")


@pytest.fixture
def page(browser, demo_source):
    page = open_page(browser, timezone_id="Europe/Paris")
    yield page
    close_page(page)


def events(source, event_type: str) -> list[Event]:
    return list(Event.objects.filter(source=source, type=event_type).order_by("timestamp"))


def aid_cookie(page) -> dict:
    cookies = [c for c in page.context.cookies() if c["name"] == "pz_aid"]
    assert len(cookies) == 1, cookies
    return cookies[0]


def open_store(page, live_server) -> str:
    """Open the storefront, wait until the snippet has loaded; the visitor's anonymous id."""
    page.goto(f"{live_server.url}/demo/")
    page.wait_for_function("window.pz && window.pz.loaded === true")
    return page.evaluate("pz.anonymousId()")


@pytest.mark.browser
def test_opening_the_store_stores_an_enriched_page_view_for_the_cookie_id(page, live_server, demo_source):
    anonymous_id = open_store(page, live_server)

    (view,) = eventually(page, lambda: events(demo_source, "page_view"), what="page_view")
    assert aid_cookie(page)["value"] == anonymous_id == view.anonymous_id
    assert page.get_by_test_id("anonymous-id").inner_text() == anonymous_id
    assert view.kind == "page"
    assert view.context["page"]["url"] == f"{live_server.url}/demo/"
    assert view.context["page"]["path"] == "/demo/"
    assert view.context["page"]["title"].startswith("Trailhead Outfitters")
    assert view.context["library"] == {"name": "pz.js", "version": "1"}
    assert view.context["timezone"] == "Europe/Paris"
    assert view.context["locale"] == "en-GB"
    assert view.context["screen"]["width"] > 0
    assert "campaign" not in view.context
    assert view.device_type == "desktop"
    assert view.browser in ("Chrome", "HeadlessChrome")
    assert view.traffic_source == "direct"
    assert abs(view.timestamp - datetime.now(UTC)) < timedelta(minutes=1)
    identity = Identity.objects.get(kind=Identity.Kind.ANONYMOUS, value=anonymous_id)
    assert identity.profile_id == view.profile_id


@pytest.mark.browser
def test_campaign_parameters_become_the_event_campaign(page, live_server, demo_source):
    page.goto(f"{live_server.url}/demo/?utm_source=newsletter&utm_medium=email&utm_campaign=winter+sale")

    (view,) = eventually(page, lambda: events(demo_source, "page_view"), what="page_view")
    assert view.context["campaign"] == {"source": "newsletter", "medium": "email", "name": "winter sale"}
    assert view.traffic_source == "email"


@pytest.mark.browser
def test_add_to_cart_then_checkout_stores_a_purchase(page, live_server, demo_source):
    anonymous_id = open_store(page, live_server)
    page.get_by_test_id("view-sku-001").click()
    page.get_by_test_id("add-sku-001").click()
    page.get_by_test_id("add-sku-002").click()
    assert page.get_by_test_id("cart-count").inner_text() == "2"
    page.get_by_test_id("checkout").click()

    (purchase,) = eventually(page, lambda: events(demo_source, "purchase"), what="purchase")
    (product_view,) = events(demo_source, "product_view")
    adds = events(demo_source, "add_to_cart")
    assert [e.properties["item_id"] for e in adds] == ["sku-001", "sku-002"]
    assert set(product_view.properties) >= {"item_id", "name", "category", "price"}
    assert purchase.properties["items"] == ["sku-001", "sku-002"]
    expected = round(adds[0].properties["price"] + adds[1].properties["price"], 2)
    assert purchase.value > 0
    assert float(purchase.value) == pytest.approx(expected)
    profile = Profile.objects.get(identities__kind=Identity.Kind.ANONYMOUS, identities__value=anonymous_id)
    assert {e.profile_id for e in [purchase, product_view, *adds]} == {profile.pk}
    assert profile.purchase_count == 1
    assert float(profile.revenue) == pytest.approx(expected)


@pytest.mark.browser
def test_sign_in_links_a_hashed_user_id_to_the_profile(page, live_server, demo_source):
    anonymous_id = open_store(page, live_server)
    page.get_by_test_id("signin-input").fill("Ana@Example.com")
    page.get_by_test_id("signin-submit").click()
    page.get_by_test_id("add-sku-003").click()

    (identify,) = eventually(page, lambda: events(demo_source, "identify"), what="identify")
    (add,) = eventually(page, lambda: events(demo_source, "add_to_cart"), what="add_to_cart")
    profile = Profile.objects.get(identities__kind=Identity.Kind.ANONYMOUS, identities__value=anonymous_id)
    user = Identity.objects.get(profile=profile, kind=Identity.Kind.USER)
    assert user.value == identity_hash("ana@example.com")
    assert "example.com" not in user.value
    assert Identity.objects.filter(profile=profile, kind=Identity.Kind.EMAIL).exists()
    assert identify.profile_id == add.profile_id == profile.pk
    # Later events carry the user id (stored only as its hash), and no clear email is kept.
    assert add.user_hash == user.value
    assert "email" not in profile.traits
    assert page.evaluate("localStorage.getItem('pz_uid')") == "ana@example.com"


@pytest.mark.browser
def test_hiding_the_page_beacons_the_queue_and_the_engaged_time(page, live_server, demo_source):
    beacons = []
    page.on("request", lambda r: beacons.append(r) if r.resource_type == "ping" else None)
    open_store(page, live_server)
    eventually(page, lambda: events(demo_source, "page_view"), what="page_view")
    page.mouse.move(200, 300)
    page.wait_for_timeout(300)
    page.mouse.move(400, 300)
    # Queued but not yet sent (batches leave about once a second) when the tab is hidden.
    page.get_by_test_id("add-sku-004").click()
    page.evaluate(
        """() => {
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    )

    (engagement,) = eventually(page, lambda: events(demo_source, "page_engagement"), what="page_engagement")
    eventually(page, lambda: events(demo_source, "add_to_cart"), what="add_to_cart")
    assert engagement.properties["url"] == f"{live_server.url}/demo/"
    assert 300 <= engagement.properties["engaged_ms"] < 30_000
    assert beacons, "the batch sent while hiding should go by navigator.sendBeacon"
    assert "/api/v1/events?k=" in beacons[0].url


@pytest.mark.browser
def test_anonymous_id_is_a_first_party_lax_cookie_that_survives_a_reload(page, live_server, demo_source):
    anonymous_id = open_store(page, live_server)
    cookie = aid_cookie(page)
    assert cookie["domain"] == "localhost"  # host-only, the page's own site
    assert cookie["path"] == "/"
    assert cookie["sameSite"] == "Lax"
    assert not cookie["secure"]  # http page; https pages get Secure
    assert cookie["expires"] > time.time() + 390 * 86400
    assert [c["name"] for c in page.context.cookies()] == ["pz_aid"]
    eventually(page, lambda: events(demo_source, "page_view"), what="first page_view")

    page.reload()
    page.wait_for_function("window.pz && window.pz.loaded === true")
    assert page.evaluate("pz.anonymousId()") == anonymous_id

    views = eventually(page, lambda: len(events(demo_source, "page_view")) == 2 and events(demo_source, "page_view"))
    assert {v.anonymous_id for v in views} == {anonymous_id}
    assert len({v.profile_id for v in views}) == 1
    assert Profile.objects.count() == 1


@pytest.mark.browser
def test_failed_batches_are_retried_and_stored_once(page, live_server, demo_source):
    calls = []

    def flaky(route):
        calls.append(route.request.post_data)
        if len(calls) == 1:
            route.fulfill(status=503, body="try later")
        else:
            route.continue_()

    page.route("**/api/v1/events?k=*", flaky)
    open_store(page, live_server)

    (view,) = eventually(page, lambda: events(demo_source, "page_view"), what="page_view after a retry")
    assert len(calls) >= 2
    assert view.message_id in calls[0] and view.message_id in calls[1]


@pytest.mark.browser
def test_auto_page_sends_page_views_on_spa_navigation(page, live_server, demo_source):
    open_store(page, live_server)
    page.evaluate(
        "([key, host]) => pz('init', key, {host: host, autoPage: true})", [demo_source.write_key, live_server.url]
    )
    page.evaluate("history.pushState({}, '', '/demo/?tab=bags')")

    views = eventually(page, lambda: len(events(demo_source, "page_view")) == 2 and events(demo_source, "page_view"))
    assert views[1].context["page"]["url"] == f"{live_server.url}/demo/?tab=bags"
    assert views[1].context["page"]["search"] == "?tab=bags"

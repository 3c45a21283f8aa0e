"""The snippet's consent banner in a real browser: on an opt-in source nothing leaves the page before the
visitor decides, the decision is recorded, and events flow (or not) accordingly; GPC refuses marketing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from privacy.models import ConsentState
from tests.browser import close_page, eventually, open_page
from tracking.models import Event, Identity
from tracking.services.sources import source_create

GPC = "Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})"
# Batches leave about once a second: what has not arrived after this long was not sent (or not kept).
QUIET_MS = 1500

pytestmark = pytest.mark.browser


def _source(live_server, regime: str):
    return source_create(name="Demo storefront", allowed_origins=[live_server.url], consent_regime=regime)


@pytest.fixture
def opt_in(browser, live_server, transactional_db):
    return _source(live_server, "opt_in")


@pytest.fixture
def new_page(browser, live_server, transactional_db) -> Iterator[Callable]:
    """Pages in fresh browser contexts (optionally with Global Privacy Control on); each records the
    requests it makes in `page.requested`."""
    opened = []

    def new(*, gpc: bool = False):
        page = open_page(browser, init_script=GPC if gpc else None)
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        opened.append(page)
        return page

    yield new
    for page in opened:
        close_page(page)


def events(source, event_type: str | None = None) -> list[Event]:
    found = Event.objects.filter(source=source).order_by("timestamp")
    return list(found.filter(type=event_type) if event_type else found)


def granted(anonymous_id: str, purpose: str) -> bool | None:
    """The visitor's current decision for a purpose (None: none recorded)."""
    state = ConsentState.objects.filter(
        profile__identities__kind=Identity.Kind.ANONYMOUS,
        profile__identities__value=anonymous_id,
        purpose__key=purpose,
    ).first()
    return None if state is None else state.granted


def open_store(page, live_server) -> str:
    page.goto(f"{live_server.url}/demo/")
    page.wait_for_function("window.pz && window.pz.loaded === true")
    return page.evaluate("pz.anonymousId()")


def banner(page):
    return page.locator("#pz-consent")


def focused(page) -> str | None:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('data-pz-consent')")


def event_requests(page) -> list[str]:
    return [url for url in page.requested if "/api/v1/events" in url]


def test_opt_in_shows_an_accessible_banner_and_sends_nothing_before_a_decision(new_page, live_server, opt_in):
    page = new_page()
    open_store(page, live_server)

    dialog = banner(page)
    dialog.wait_for(state="visible")
    assert dialog.get_attribute("role") == "dialog"
    title = page.locator(f"#{dialog.get_attribute('aria-labelledby')}")
    text = page.locator(f"#{dialog.get_attribute('aria-describedby')}")
    assert title.inner_text().strip() == opt_in.banner_title.strip()
    assert text.inner_text().strip() == opt_in.banner_text.strip()
    assert focused(page) == "accept"
    for action in ("accept", "reject", "choose"):
        assert dialog.locator(f"[data-pz-consent={action}]").is_visible()
    assert not dialog.locator("[data-pz-consent=save]").is_visible()

    # Choose: one checkbox per purpose, the required one checked and disabled, the others open.
    dialog.locator("[data-pz-consent=choose]").click()
    assert dialog.locator("[data-pz-consent=save]").is_visible()
    assert dialog.locator("input[name=necessary]").is_checked()
    assert dialog.locator("input[name=necessary]").is_disabled()
    for key in ("analytics", "personalization", "marketing"):
        assert dialog.locator(f"input[name={key}]").is_enabled()
        assert not dialog.locator(f"input[name={key}]").is_checked()

    page.get_by_test_id("add-sku-001").click()
    page.wait_for_timeout(QUIET_MS)
    assert event_requests(page) == []
    assert not Event.objects.exists()


def test_accepting_all_records_consent_and_sends_the_held_events(new_page, live_server, opt_in):
    page = new_page()
    anonymous_id = open_store(page, live_server)
    banner(page).wait_for(state="visible")

    page.locator("[data-pz-consent=accept]").click()

    assert banner(page).count() == 0
    eventually(page, lambda: granted(anonymous_id, "analytics") is True, what="analytics granted")
    assert granted(anonymous_id, "marketing") is True
    (view,) = eventually(page, lambda: events(opt_in, "page_view"), what="the held page_view")
    assert view.anonymous_id == anonymous_id
    assert "gpc" not in view.context
    page.get_by_test_id("add-sku-001").click()
    eventually(page, lambda: events(opt_in, "add_to_cart"), what="add_to_cart")

    # The banner can be opened again (a "privacy settings" link), showing the choices made.
    page.get_by_test_id("privacy-settings").click()
    banner(page).wait_for(state="visible")
    page.locator("[data-pz-consent=choose]").click()
    assert page.locator("#pz-consent input[name=analytics]").is_checked()


def test_rejecting_with_the_keyboard_stores_nothing(new_page, live_server, opt_in):
    page = new_page()
    anonymous_id = open_store(page, live_server)
    banner(page).wait_for(state="visible")
    assert focused(page) == "accept"

    page.keyboard.press("Tab")
    assert focused(page) == "reject"
    page.keyboard.press("Enter")

    eventually(page, lambda: granted(anonymous_id, "analytics") is False, what="analytics refused")
    assert granted(anonymous_id, "personalization") is False
    assert granted(anonymous_id, "marketing") is False
    assert banner(page).count() == 0
    page.get_by_test_id("view-sku-002").click()
    page.get_by_test_id("add-sku-002").click()
    page.wait_for_timeout(QUIET_MS)
    assert not Event.objects.exists()


def test_withdrawing_analytics_stops_collection(new_page, live_server, opt_in):
    page = new_page()
    anonymous_id = open_store(page, live_server)
    page.locator("[data-pz-consent=accept]").click()
    eventually(page, lambda: events(opt_in, "page_view"), what="page_view")

    page.evaluate("pz('consent', {analytics: false})")
    eventually(page, lambda: granted(anonymous_id, "analytics") is False, what="analytics withdrawn")
    assert granted(anonymous_id, "personalization") is True
    page.get_by_test_id("add-sku-003").click()
    page.get_by_test_id("view-sku-003").click()
    page.wait_for_timeout(QUIET_MS)
    assert [e.type for e in events(opt_in)] == ["page_view"]
    assert banner(page).count() == 0


def test_global_privacy_control_refuses_marketing_even_on_accept_all(new_page, live_server, opt_in):
    page = new_page(gpc=True)
    anonymous_id = open_store(page, live_server)
    banner(page).wait_for(state="visible")

    page.locator("[data-pz-consent=accept]").click()

    eventually(page, lambda: granted(anonymous_id, "analytics") is True, what="analytics granted")
    assert granted(anonymous_id, "marketing") is False
    assert granted(anonymous_id, "personalization") is True
    (view,) = eventually(page, lambda: events(opt_in, "page_view"), what="page_view")
    assert view.context["gpc"] is True


def test_opt_out_source_shows_no_banner_and_sends_right_away(new_page, live_server, transactional_db):
    source = _source(live_server, "opt_out")
    page = new_page()
    open_store(page, live_server)

    eventually(page, lambda: events(source, "page_view"), what="page_view")
    page.get_by_test_id("add-sku-001").click()
    eventually(page, lambda: events(source, "add_to_cart"), what="add_to_cart")
    assert banner(page).count() == 0

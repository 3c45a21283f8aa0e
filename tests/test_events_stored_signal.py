"""Other apps learn of stored events through one signal: each stored event once, never a duplicate
or an event the visitor's consent kept out, on the single-event path and the batch path alike."""

import pytest

from tests.factories import SourceFactory, event
from tracking.models import Profile, Source
from tracking.signals import events_stored

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced():
    received: list = []

    def receiver(sender, source_id, events, **kwargs):
        received.extend((source_id, e) for e in events)

    events_stored.connect(receiver, dispatch_uid="test-announced")
    yield received
    events_stored.disconnect(dispatch_uid="test-announced")


def post(client, events):
    response = client.post("/api/v1/events", {"events": events}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_first_and_returning_visits_are_announced_with_their_profile(client_public, source, announced):
    post(client_public, [event("product_view", properties={"item_id": "sku-1"})])
    post(client_public, [event("add_to_cart", n=1, properties={"item_id": "sku-1"})])
    profile = Profile.objects.get()
    assert [(sid, e.profile_id, e.type) for sid, e in announced] == [
        (source.pk, profile.pk, "product_view"),
        (source.pk, profile.pk, "add_to_cart"),
    ]
    assert announced[1][1].properties == {"item_id": "sku-1"}


def test_batch_announces_each_new_event_once_and_no_duplicates(client_public, announced):
    post(client_public, [event("page_view", n=0), event("page_view", n=1, anonymous_id="anon-2")])
    post(client_public, [event("page_view", n=0), event("purchase", n=2, properties={"revenue": 5})])
    assert sorted(e.type for _, e in announced) == ["page_view", "page_view", "purchase"]
    assert len({e.profile_id for _, e in announced}) == 2


def test_events_kept_out_by_consent_are_not_announced(client, announced):
    from rest_framework.test import APIClient

    opt_in = SourceFactory(consent_regime=Source.ConsentRegime.OPT_IN)
    api = APIClient()
    api.credentials(HTTP_X_WRITE_KEY=opt_in.write_key)
    result = post(api, [event("product_view")])
    assert result["suppressed"] == 1
    assert announced == []


def test_a_failing_receiver_does_not_fail_ingestion(client_public, announced):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    events_stored.connect(broken, dispatch_uid="test-broken")
    try:
        result = post(client_public, [event("page_view")])
    finally:
        events_stored.disconnect(dispatch_uid="test-broken")
    assert result["accepted"] == 1 and len(announced) == 1

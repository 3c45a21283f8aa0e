"""The real-time refresh commits without waiting for the WAL flush (SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT
off) only for its own one-statement transaction: the connection's setting, and a caller's transaction,
keep theirs."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from segments.models import Segment, SegmentMembership
from segments.receivers import realtime_index_forget
from segments.services import profile_segments_refresh
from tests.test_segments_compiler import make_profile

CARTS = {"kind": "event", "event": "add_to_cart", "measure": "count", "within": 7, "op": "gte", "value": 1}

pytestmark = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a Postgres setting")


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("synchronous", [False, True])
def test_a_refresh_outside_a_transaction_stores_the_change_and_leaves_the_connection_setting(
    source, settings, synchronous
):
    settings.SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT = synchronous
    realtime_index_forget()
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 0.5}], now=timezone.now())
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    assert not connection.in_atomic_block
    changes = profile_segments_refresh(profile_id=carter.pk, event_types=["add_to_cart"])
    assert [(c.segment_key, c.kind) for c in changes] == [("carts", "entered")]
    assert synchronous_commit() == "on"
    assert list(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True)) == [carter.pk]
    realtime_index_forget()


@pytest.mark.django_db
def test_a_refresh_inside_a_callers_transaction_keeps_its_durability(source):
    realtime_index_forget()
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 0.5}], now=timezone.now())
    Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    with transaction.atomic():
        assert [c.kind for c in profile_segments_refresh(profile_id=carter.pk, event_types=["add_to_cart"])] == [
            "entered"
        ]
        assert synchronous_commit() == "on"
    realtime_index_forget()

"""Memberships and history have no database foreign keys (bulk writes, see SegmentMembership): deleting
segments and profiles still takes their rows along, and a row left behind by a profile deleted during
a recompute is removed by the next recompute."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from segments.models import Segment, SegmentMembership, SegmentMembershipChange
from segments.services import segment_recompute
from tests.test_segments_compiler import NOW, make_profile
from tracking.models import Profile

CARTS = {"kind": "event", "event": "add_to_cart", "measure": "count", "within": 7, "op": "gte", "value": 1}


@pytest.mark.django_db
def test_deleting_a_segment_deletes_its_memberships_and_history(source):
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    doomed = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    kept = Segment.objects.create(key="carts-2", name="Carts 2", rule=CARTS)
    for segment in (doomed, kept):
        segment_recompute(segment_id=segment.pk, now=NOW)
    doomed.delete()
    assert list(SegmentMembership.objects.values_list("segment_id", "profile_id")) == [(kept.pk, carter.pk)]
    assert list(SegmentMembershipChange.objects.values_list("segment_id", flat=True)) == [kept.pk]


@pytest.mark.django_db
def test_deleting_a_profile_deletes_its_memberships_and_history(source):
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    other = make_profile(source, events=[{"type": "add_to_cart", "days": 2}])
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    segment_recompute(segment_id=segment.pk, now=NOW)
    Profile.objects.filter(pk=carter.pk).delete()
    assert set(SegmentMembership.objects.values_list("profile_id", flat=True)) == {other.pk}
    assert set(SegmentMembershipChange.objects.values_list("profile_id", flat=True)) == {other.pk}


@pytest.mark.django_db
def test_a_membership_left_by_a_deleted_profile_goes_at_the_next_recompute(source):
    carter = make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    segment = Segment.objects.create(key="carts", name="Carts", rule=CARTS)
    gone = make_profile(source, events=[{"type": "add_to_cart", "days": 1}])
    gone_id = gone.pk
    gone.delete()
    with connection.cursor() as cursor:  # what a recompute that read the profile before its deletion writes
        cursor.execute(
            f"INSERT INTO {SegmentMembership._meta.db_table} (segment_id, profile_id, entered_at) VALUES (%s, %s, %s)",
            [segment.pk, gone_id, timezone.now() - timedelta(minutes=1)],
        )
    result = segment_recompute(segment_id=segment.pk, now=NOW)
    assert set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True)) == {carter.pk}
    assert (result.size, result.entered, result.left) == (1, 1, 1)

"""Reads of the segments app: segments, members, and the segments of a profile."""

from __future__ import annotations

from django.db.models import QuerySet

from segments.models import Segment, SegmentMembership, SegmentSizeSnapshot


def segment_list() -> QuerySet[Segment]:
    return Segment.objects.order_by("key")


def segment_by_key(*, key: str) -> Segment | None:
    return Segment.objects.filter(key=key).first()


def segment_members(*, segment: Segment) -> QuerySet[SegmentMembership]:
    """Current members, newest first, with their profiles (one query per page)."""
    return SegmentMembership.objects.filter(segment=segment).select_related("profile").order_by("-entered_at", "-id")


def profile_segment_keys(*, profile_id: int) -> list[str]:
    """Keys of the active segments a profile is in, sorted (one query)."""
    return sorted(
        SegmentMembership.objects.filter(profile_id=profile_id, segment__status=Segment.Status.ACTIVE).values_list(
            "segment__key", flat=True
        )
    )


def segment_sizes(*, segment: Segment, limit: int = 500) -> list[tuple]:
    """(time, size) after each recompute, oldest first, for size-over-time charts."""
    rows = SegmentSizeSnapshot.objects.filter(segment=segment).order_by("-at").values_list("at", "size")[:limit]
    return list(reversed(rows))


def membership_export(row: SegmentMembership) -> dict:
    """A membership as the person receives it in a data export: the segment by key and name."""
    return {"segment": row.segment.key, "segment_name": row.segment.name, "entered_at": row.entered_at}


def membership_change_export(row) -> dict:
    return {"segment": row.segment.key, "kind": row.kind, "at": row.at, "via": row.via}

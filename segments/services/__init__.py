"""Services of the segments app (writes and business rules), one module per concept."""

from segments.services.definitions import (
    Preview,
    SegmentInvalid,
    segment_create,
    segment_from_template,
    segment_preview,
    segment_update,
)
from segments.services.membership import (
    Change,
    RecomputeResult,
    profile_segments_refresh,
    segment_recompute,
    segments_recompute_all,
)
from segments.services.realtime import active_segments, profile_segments_evaluate

__all__ = [
    "Change",
    "Preview",
    "RecomputeResult",
    "SegmentInvalid",
    "active_segments",
    "profile_segments_evaluate",
    "profile_segments_refresh",
    "segment_create",
    "segment_from_template",
    "segment_preview",
    "segment_recompute",
    "segment_update",
    "segments_recompute_all",
]

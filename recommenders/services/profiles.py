"""Per-profile rows of the recommenders app when profiles merge."""

from __future__ import annotations

from django.db.models import Exists, OuterRef

from recommenders.models import Feedback, RecommendationServed


def profile_rows_move(*, source_id: int, target_id: int) -> None:
    """Feedback and served lists follow a merge. Where both profiles rated one item, the more
    recent rating stands (the visitor's latest opinion)."""
    theirs = Feedback.objects.filter(profile_id=source_id)
    ours = {f.item_id: f for f in Feedback.objects.filter(profile_id=target_id, item_id__in=theirs.values("item_id"))}
    for mine in theirs.filter(item_id__in=list(ours)):
        if mine.created_at > ours[mine.item_id].created_at:
            ours[mine.item_id].delete()
        else:
            mine.delete()
    clash = Feedback.objects.filter(profile_id=target_id, item_id=OuterRef("item_id"))
    Feedback.objects.filter(profile_id=source_id).exclude(Exists(clash)).update(profile_id=target_id)
    RecommendationServed.objects.filter(profile_id=source_id).update(profile_id=target_id)

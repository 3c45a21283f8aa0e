"""Explicit feedback: a visitor's thumbs up or down on an item. Down takes effect on their very
next list (serving reads feedback with the visitor's history) and trains as a negative signal
(the configuration's `thumbs_down` weight, read by the interaction matrix)."""

from __future__ import annotations

import logging

from django.utils import timezone

from recommenders.models import Feedback, Item
from recommenders.serving.cache import CACHE_ERRORS
from recommenders.serving.visitors import personalization_allowed
from tracking.models import Profile, Source

logger = logging.getLogger(__name__)


class ConsentRequired(Exception):
    """The visitor's consent does not allow personalization: their opinion is not kept."""


class UnknownItem(Exception):
    pass


def feedback_record(*, source: Source, profile: Profile, external_id: str, kind: str) -> tuple[Feedback, bool]:
    """Store (or change) the visitor's opinion of an item; returns (row, created). Giving the
    opposite opinion later replaces the first one: the latest is what the visitor thinks."""
    if kind not in Feedback.Kind.values:
        raise ValueError(f"kind must be one of {', '.join(Feedback.Kind.values)}")
    if not personalization_allowed(profile=profile, source=source):
        raise ConsentRequired("the visitor's consent does not allow personalization: feedback is not stored")
    item = Item.objects.filter(external_id=external_id).only("id").first()
    if item is None:
        raise UnknownItem(external_id)
    result = Feedback.objects.update_or_create(
        profile=profile, item=item, defaults={"kind": kind, "created_at": timezone.now()}
    )
    _lists_drop(profile.pk)
    return result


def _lists_drop(profile_id: int) -> None:
    """The visitor's cached lists no longer match their opinion: the next request recomputes."""
    from recommenders.store import toplists_forget_profile

    try:
        toplists_forget_profile(profile_id=profile_id)
    except CACHE_ERRORS:
        logger.warning("cached lists of profile %s not dropped (cache unreachable)", profile_id)

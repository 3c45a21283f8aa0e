"""Recommendation serving: what a visitor is shown (recommendations, similar items, trending), the
read path from the cache to the model in memory to the cold-start ladder, and explicit feedback.

Modules by concept: `visitors` (who asks, consent, context, history), `personal` (the live model
and the ladder), `trending` (per-slice popularity from recent events), `rules` and `merchandise`
(what may be shown and in which order), `placements`, `cache` (keys and outage-proof access),
`feedback`, `lists` (building a list through the rules and fallbacks, and logging it), `recommend`
(a visitor's list: the read path and the ladder) and `similar` (similar items, trending).
"""

from recommenders.serving import receivers  # noqa: F401 - cached visitors go stale when their profile changes
from recommenders.serving.feedback import ConsentRequired, UnknownItem, feedback_record
from recommenders.serving.lists import ServedItem, ServedList
from recommenders.serving.recommend import recommendations_serve
from recommenders.serving.similar import ItemNotFound, items_similar, trending_serve
from recommenders.serving.trending import Slice
from recommenders.serving.visitors import profile_by_anonymous_id, profile_by_user_id

__all__ = [
    "ConsentRequired",
    "ItemNotFound",
    "ServedItem",
    "ServedList",
    "Slice",
    "UnknownItem",
    "feedback_record",
    "items_similar",
    "profile_by_anonymous_id",
    "profile_by_user_id",
    "recommendations_serve",
    "trending_serve",
]

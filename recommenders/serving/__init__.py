"""Recommendation serving: what a visitor is shown (recommendations, similar items, trending), the
read path from the cache to the model in memory to the cold-start ladder, and explicit feedback.

Modules by concept: `visitors` (who asks, consent, context, history), `personal` (the live model
and the ladder), `trending` (per-slice popularity from recent events), `rules` and `merchandise`
(what may be shown and in which order), `placements`, `cache` (keys and outage-proof access),
`feedback`, `lists` (building a list through the rules and fallbacks, and logging it), `served`
(the served-list log, buffered in Redis and written in bulk), `recommend` (a visitor's list: the
read path and the ladder), `similar` (similar items, trending) and `receivers` (profile changes
that make cached visitors stale).

The cached answer's budget: no database query (the visitor from the visitor cache, confirmed by the
change stamp read in the same MGET as their precomputed list) and two Redis round trips (that MGET
and the RPUSH of the served-list row), plus a GET of the visitor's entry when this process has not
seen them in the last minutes.
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

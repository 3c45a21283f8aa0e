"""Recommendation serving: what a visitor is shown (recommendations, similar items, trending), the
read path from the cache to the model in memory to the cold-start ladder, and explicit feedback.

Modules by concept: `visitors` (who asks, consent, context, history), `personal` (the live model
and the ladder), `trending` (per-slice popularity from recent events), `rules` and `merchandise`
(what may be shown and in which order), `items` (catalogue rows kept in the process, and the
change log that tells it which went stale), `placements`, `cache` (keys and outage-proof access),
`feedback`, `lists` (building a list through the rules and fallbacks, and logging it), `served`
(the served-list log, buffered in Redis and written in bulk), `recommend` (a visitor's list: the
read path and the ladder), `similar` (similar items, trending) and `receivers` (profile changes
that make cached visitors stale).

The cached answer's budget: no database query and one Redis round trip. A visitor this process
remembers is confirmed by the change stamp read in the same MGET as their precomputed list; one it
does not is read from the visitor cache together with their list and stamp (one script call); the
served-list row is appended to the process's buffer, which a pusher thread sends to Redis in bulk.
"""

from recommenders.serving import receivers  # noqa: F401 - cached visitors go stale when their profile changes
from recommenders.serving.feedback import ConsentRequired, UnknownItem, feedback_record
from recommenders.serving.lists import ServedItem, ServedList
from recommenders.serving.recommend import recommendations_serve, toplist_prefix_for
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
    "toplist_prefix_for",
    "trending_serve",
]

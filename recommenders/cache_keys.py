"""Cache keys and lifetimes of the recommenders app. No other module writes a key string inline.

Keys of precomputed lists carry the configuration key *and* the model version, so publishing a
new version never mixes old and new lists: readers follow the live pointer, which moves in one
write once every list of the new version is in place.
"""

from __future__ import annotations

# Bump when the layout of a cached value changes: old values are then simply never read again.
VERSION = 1

# A precomputed list outlives the schedule of its model with margin; stale versions expire by themselves.
TOPLIST_TTL = 3 * 24 * 3600
# A list recomputed on read (the user had newer events than the precompute) is fresh for a while.
RECOMPUTED_TTL = 15 * 60
# The live pointer never expires: it is replaced when a new version is published.
LIVE_POINTER_TTL = None
# Process-local memo of the live pointer, sparing a round trip per request.
LIVE_POINTER_LOCAL_TTL = 2.0
# Lock against two concurrent trainings of one configuration (longer than any sane training).
TRAIN_LOCK_TTL = 2 * 3600


def toplist(config_key: str, version: int, profile_id: int) -> str:
    """Precomputed top-N of one profile under one model version: `(item_ids, scores, computed_at)`."""
    return f"{toplist_prefix(config_key, version)}{profile_id}"


def toplist_prefix(config_key: str, version: int) -> str:
    """The lists of one model version: their keys are this followed by the profile id."""
    return f"{toplists_prefix()}{config_key}:{version}:"


def toplists_prefix() -> str:
    """Every precomputed list's key starts with this."""
    return f"rec:v{VERSION}:top:"


def live_pointer(config_key: str) -> str:
    """Live model version number of a configuration (an int)."""
    return f"rec:v{VERSION}:live:{config_key}"


def train_lock(config_key: str) -> str:
    return f"rec:v{VERSION}:lock:train:{config_key}"


def catalogue_counter() -> str:
    """Catalogue change log (see `serving/items.py`): goes up by one with each announced write."""
    return f"rec:v{VERSION}:catalogue:seq"


def catalogue_changes() -> str:
    """... the ids changed, each scored by the counter of its latest change (a sorted set)."""
    return f"rec:v{VERSION}:catalogue:changes"


def catalogue_trimmed() -> str:
    """... and the highest counter the sorted set no longer fully holds."""
    return f"rec:v{VERSION}:catalogue:trimmed"

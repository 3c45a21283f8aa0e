"""Serving's receivers: whatever changes what the visitor cache holds about a profile (events
stored: last_seen_at and context; consent; a merge; erasure) stamps the profile, condemning its
cached visitor entries (see `visitors.visitors_changed`); a catalogue item saved or deleted one by
one (the admin, a deletion through the API) is announced to the web processes' catalogue memos (see
`items.items_changed`; the bulk upsert announces its own).

Connected when this module is imported: `recommenders.serving` imports it (every web process that
serves), and `RecommendersConfig.ready()` should too, so worker processes that store events or
merge profiles stamp as well.
"""

from __future__ import annotations

import contextlib

from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from privacy import registry
from privacy.models import ConsentState
from recommenders.models import Item
from recommenders.serving.cache import CACHE_ERRORS
from recommenders.serving.items import items_changed_on_commit
from recommenders.serving.visitors import visitors_changed, visitors_forget_profile
from tracking.models import Profile
from tracking.services.identity import profile_merged
from tracking.signals import StoredEvent, events_stored


def _changed(profile_ids) -> None:
    """Stamp now, and inside a transaction again when it commits: a request reading the database
    between the two would otherwise cache what the transaction is about to change. One Redis round
    trip per batch of stored events (every profile of the batch at once)."""
    ids = [int(pid) for pid in profile_ids if pid is not None]
    if not ids:
        return
    visitors_changed(ids)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: visitors_changed(ids))


@receiver(events_stored, sender=StoredEvent, dispatch_uid="recommenders.serving.visitors_seen")
def visitors_seen(sender, *, source_id: int, events: list[StoredEvent], **kwargs) -> None:
    _changed({e.profile_id for e in events})


@receiver(profile_merged, sender=Profile, dispatch_uid="recommenders.serving.visitors_merged")
def visitors_merged(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    _changed([source_id, target_id])


@receiver(post_save, sender=ConsentState, dispatch_uid="recommenders.serving.visitor_consent")
def visitor_consent(sender, *, instance: ConsentState, **kwargs) -> None:
    _changed([instance.profile_id])


@receiver(post_save, sender=Item, dispatch_uid="recommenders.serving.item_saved")
@receiver(post_delete, sender=Item, dispatch_uid="recommenders.serving.item_deleted")
def item_changed(sender, *, instance: Item, **kwargs) -> None:
    items_changed_on_commit([instance.external_id])


def visitor_erased(profile) -> None:
    """Erasure (a privacy cache cleaner): the erased profile's cached visitor entries are deleted
    (and stamped stale, should one be written again by a request already under way)."""
    visitors_changed([profile.pk])
    with contextlib.suppress(*CACHE_ERRORS):
        visitors_forget_profile(profile.pk)


registry.register_cache_cleaner(visitor_erased)

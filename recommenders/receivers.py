"""Receivers of other apps' signals: stub catalogue items from stored events, and per-profile rows
following a profile merge. Both run inside requests, so they stay a query or two."""

from __future__ import annotations

from django.dispatch import receiver

from recommenders.services.catalogue import item_ids_in_events, items_stub_create
from recommenders.services.profiles import profile_rows_move
from tracking.models import Profile
from tracking.services.identity import profile_merged
from tracking.signals import StoredEvent, events_stored


@receiver(events_stored, sender=StoredEvent, dispatch_uid="recommenders.stub_items")
def stub_items(sender, *, source_id: int, events: list[StoredEvent], **kwargs) -> None:
    ids = item_ids_in_events(events)
    if ids:
        items_stub_create(external_ids=ids)


@receiver(profile_merged, sender=Profile, dispatch_uid="recommenders.profile_merge")
def profile_merge(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    profile_rows_move(source_id=source_id, target_id=target_id)

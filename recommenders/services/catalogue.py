"""Catalogue writes: bulk upsert from the API, deletion, and stub items for ids that events name
before the catalogue does (so interactions with them are never lost to training)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from recommenders.models import Item

MAX_EXTERNAL_ID = 200
# Properties holding lists of items (a cart, an order), and how many entries of one are read.
LIST_KEYS = ("products", "items")
MAX_LIST_ENTRIES = 200
# Fields an upsert may set; `external_id` is the key and `is_stub` is cleared by any upsert.
UPSERT_FIELDS = (
    "title",
    "description",
    "categories",
    "tags",
    "price",
    "attributes",
    "in_stock",
    "available_from",
    "available_until",
    "latitude",
    "longitude",
)


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int


def items_upsert(*, items: Iterable[dict]) -> UpsertResult:
    """Create or update items by `external_id` in a few statements. Fields an item omits keep their
    current value (defaults for a new item), so a stock-only update is just
    `{"external_id": ..., "in_stock": false}`. A later entry for the same id wins."""
    merged: dict[str, dict] = {}
    for item in items:
        merged.setdefault(item["external_id"], {}).update(item)
    from recommenders.serving.items import items_changed_on_commit  # serving imports this module

    if not merged:
        return UpsertResult(0, 0)
    with transaction.atomic():
        existing = set(Item.objects.filter(external_id__in=list(merged)).values_list("external_id", flat=True))
        # One statement per distinct set of given fields (nearly always a single group).
        groups: dict[tuple[str, ...], list[Item]] = {}
        now = timezone.now()
        for external_id, fields in merged.items():
            given = tuple(sorted(f for f in fields if f in UPSERT_FIELDS))
            values = {f: fields[f] for f in given}
            groups.setdefault(given, []).append(
                Item(external_id=external_id, is_stub=False, created_at=now, updated_at=now, **values)
            )
        for given, rows in groups.items():
            Item.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*given, "is_stub", "updated_at"],
                batch_size=500,
            )
        items_changed_on_commit(merged)
    return UpsertResult(created=len(merged) - len(existing), updated=len(existing))


def item_delete(*, external_id: str) -> bool:
    deleted, _ = Item.objects.filter(external_id=external_id).delete()
    items_stub_forget([external_id])
    return bool(deleted)


def _clean_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and len(text) <= MAX_EXTERNAL_ID else None


def item_ids_in_properties(properties: dict) -> list[str]:
    """Item ids an event names: `item_id` (else `product_id`), and each entry of `products[]` or
    `items[]`, either an object with `item_id` / `product_id` (Segment's e-commerce spec) or a bare
    id. The interaction matrix reads events the same way (`services/matrix.py`)."""
    if not isinstance(properties, dict):
        return []
    found = []
    value = properties.get("item_id")
    if value is None:
        value = properties.get("product_id")
    if (value := _clean_id(value)) is not None:
        found.append(value)
    for key in LIST_KEYS:
        entries = properties.get(key)
        if not isinstance(entries, list):
            continue
        for entry in entries[:MAX_LIST_ENTRIES]:
            if isinstance(entry, dict):
                entry = entry.get("item_id") if entry.get("item_id") is not None else entry.get("product_id")
            if (value := _clean_id(entry)) is not None:
                found.append(value)
    return found


def item_ids_in_events(events: Iterable) -> list[str]:
    ids: dict[str, None] = {}
    for event in events:
        for value in item_ids_in_properties(event.properties):
            ids[value] = None
    return list(ids)


# Item ids this process has seen in the catalogue (or just stubbed), with when it may believe that
# until: events naming them need no statement. An item deleted elsewhere gets its stub back within
# STUB_MEMO_SECONDS of an event naming it (until then its events wait in the table, as any event
# naming an unknown id does, and are learned from once it exists).
STUB_MEMO_SECONDS = 300.0
STUB_MEMO_BOUND = 100_000
_known_items: dict[str, float] = {}


def items_stub_create(*, external_ids: list[str]) -> None:
    """Insert stub items for ids the catalogue lacks, ignoring those it has (sorted: concurrent
    batches take row locks in one order): one INSERT .. ON CONFLICT DO NOTHING, so it never races a
    concurrent upsert and never overwrites a real item. Ids this process knows exist are skipped:
    on the ingestion path that statement cost a quarter of a single event's request."""
    now_mono = time.monotonic()
    wanted = sorted({i for i in external_ids if _known_items.get(i, 0.0) < now_mono})
    if not wanted:
        return
    now = timezone.now()
    Item.objects.bulk_create(
        [Item(external_id=i, is_stub=True, created_at=now, updated_at=now) for i in wanted],
        ignore_conflicts=True,
        batch_size=500,
    )
    if len(_known_items) + len(wanted) > STUB_MEMO_BOUND:
        _known_items.clear()
    until = now_mono + STUB_MEMO_SECONDS
    for external_id in wanted:
        _known_items[external_id] = until


def items_stub_forget(external_ids=None) -> None:
    """Forget known ids (deleted items, in this process; all of them: tests)."""
    if external_ids is None:
        _known_items.clear()
        return
    for external_id in external_ids:
        _known_items.pop(external_id, None)

"""Catalogue writes: bulk upsert from the API, deletion, and stub items for ids that events name
before the catalogue does (so interactions with them are never lost to training)."""

from __future__ import annotations

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
    return UpsertResult(created=len(merged) - len(existing), updated=len(existing))


def item_delete(*, external_id: str) -> bool:
    deleted, _ = Item.objects.filter(external_id=external_id).delete()
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


def items_stub_create(*, external_ids: list[str]) -> None:
    """Insert stub items for ids the catalogue lacks, ignoring those it has (sorted: concurrent
    batches take row locks in one order): one
    INSERT .. ON CONFLICT DO NOTHING, so it never races a concurrent upsert and never overwrites
    a real item. (No process-local memo of known ids: it would go stale when an item is deleted
    elsewhere, and the statement is one index probe per id.)"""
    now = timezone.now()
    Item.objects.bulk_create(
        [Item(external_id=i, is_stub=True, created_at=now, updated_at=now) for i in sorted(set(external_ids))],
        ignore_conflicts=True,
        batch_size=500,
    )

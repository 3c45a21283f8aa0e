"""Simple sources marketers expect beside the models: the visitor's recently viewed items (for
returning visitors) and the items nearest a point, for catalogues whose items carry a location
(stores, venues). Both go through the same item filters as every list: in stock, category,
excluded ids, and the visitor's thumbs-down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from recommenders.algorithms.nearest import check_point, nearest_items
from recommenders.models import Feedback, Item
from recommenders.services.catalogue import item_ids_in_properties
from tracking.models import Event

# Events that mean "looked at this item"; a purchase or cart add is a view too.
VIEW_TYPES = ("product_view", "product_viewed", "Product Viewed", "add_to_cart", "Product Added", "purchase")
# How many of the visitor's latest events are read to find their distinct items.
SCAN_EVENTS = 200


@dataclass(frozen=True)
class Found:
    item: Item
    seen_at: datetime | None = None
    distance_km: float | None = None


def _eligible(items, *, category: str, in_stock_only: bool, exclude: set[str], down: set[str]) -> list[Item]:
    kept = []
    for item in items:
        if item.external_id in exclude or item.external_id in down:
            continue
        if in_stock_only and not item.in_stock:
            continue
        if category and category not in (item.categories or []):
            continue
        kept.append(item)
    return kept


def _thumbs_down(profile_id: int | None) -> set[str]:
    if profile_id is None:
        return set()
    return set(
        Feedback.objects.filter(profile_id=profile_id, kind=Feedback.Kind.DOWN).values_list(
            "item__external_id", flat=True
        )
    )


def items_recently_viewed(
    *, profile_id: int, n: int = 10, category: str = "", in_stock_only: bool = False, exclude: set[str] = frozenset()
) -> list[Found]:
    """The visitor's distinct viewed items, most recent first, from their latest events (one indexed
    read of the profile's newest events, then the catalogue rows)."""
    rows = (
        Event.objects.filter(profile_id=profile_id, type__in=VIEW_TYPES)
        .order_by("-timestamp")
        .values_list("properties", "timestamp")[:SCAN_EVENTS]
    )
    seen: dict[str, datetime] = {}
    for properties, timestamp in rows:
        for external_id in item_ids_in_properties(properties):
            seen.setdefault(external_id, timestamp)
    if not seen:
        return []
    by_id = {item.external_id: item for item in Item.objects.filter(external_id__in=list(seen))}
    ordered = [by_id[i] for i in seen if i in by_id]
    kept = _eligible(
        ordered, category=category, in_stock_only=in_stock_only, exclude=set(exclude), down=_thumbs_down(profile_id)
    )
    return [Found(item=item, seen_at=seen[item.external_id]) for item in kept[:n]]


def items_nearest(
    *,
    lat: float,
    lon: float,
    n: int = 10,
    max_km: float | None = None,
    category: str = "",
    in_stock_only: bool = True,
    exclude: set[str] = frozenset(),
    profile_id: int | None = None,
) -> list[Found]:
    """The located items closest to (lat, lon), nearest first (great-circle distance). Raises
    ValueError for a point off the globe."""
    located = list(
        Item.objects.filter(latitude__isnull=False, longitude__isnull=False).only(
            "external_id", "title", "price", "categories", "in_stock", "latitude", "longitude"
        )
    )
    kept = _eligible(
        located, category=category, in_stock_only=in_stock_only, exclude=set(exclude), down=_thumbs_down(profile_id)
    )
    check_point(lat, lon)
    if not kept:
        return []
    coordinates = np.array([[float(i.latitude), float(i.longitude)] for i in kept], dtype=np.float64)
    columns, distances = nearest_items(lat, lon, coordinates, n, max_km=max_km)
    return [Found(item=kept[c], distance_km=round(float(d), 3)) for c, d in zip(columns, distances, strict=True)]

"""Rules applied after scoring, the same whichever source produced a candidate: what may never be
shown (the request's `exclude` and `category`, the visitor's thumbs-down, out-of-stock or
unavailable items, what they bought or saw when the placement says so), then the placement's
merchandising (pins, boosts, buries, price range, category include/exclude and caps, diversity,
exploration)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from recommenders.models import Item

logger = logging.getLogger(__name__)


# A buried item's score is multiplied by this (`"buries": ["sku-3"]`); `{"sku-3": 0.5}` sets it.
BURY_FACTOR = 0.2


def _float(value, default: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return default
    try:
        return float(value)
    except ValueError:
        return default


def _strings(value) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool))
    return ()


@dataclass(frozen=True)
class Rules:
    """A placement's rules (`Placement.rules`), read leniently: a malformed entry is ignored (and
    logged), never a reason to fail a visitor's page."""

    exclude_seen: bool = False
    exclude_purchased: bool = True
    in_stock_only: bool = True
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    pins: dict[str, int] = field(default_factory=dict)
    boosts: dict[str, float] = field(default_factory=dict)
    buries: dict[str, float] = field(default_factory=dict)
    category_cap: int | None = None
    mmr_lambda: float | None = None
    exploration: float = 0.0

    @classmethod
    def parse(cls, raw: dict) -> Rules:
        raw = raw if isinstance(raw, dict) else {}
        pins = {}
        for item, position in (raw.get("pins") or {}).items() if isinstance(raw.get("pins"), dict) else ():
            if isinstance(position, int) and not isinstance(position, bool) and position >= 0:
                pins[str(item)] = position
        boosts = {}
        for item, factor in (raw.get("boosts") or {}).items() if isinstance(raw.get("boosts"), dict) else ():
            value = _float(factor)
            if value is not None and value > 0:
                boosts[str(item)] = value
        buries: dict[str, float] = {}
        raw_buries = raw.get("buries")
        if isinstance(raw_buries, dict):
            for item, factor in raw_buries.items():
                value = _float(factor)
                if value is not None and 0 < value < 1:
                    buries[str(item)] = value
        else:
            buries = {item: BURY_FACTOR for item in _strings(raw_buries)}
        cap = raw.get("category_cap")
        mmr = _float(raw.get("mmr_lambda"))
        exploration = _float(raw.get("exploration"), 0.0) or 0.0
        return cls(
            exclude_seen=bool(raw.get("exclude_seen", False)),
            exclude_purchased=bool(raw.get("exclude_purchased", True)),
            in_stock_only=bool(raw.get("in_stock_only", True)),
            categories=_strings(raw.get("categories")),
            exclude_categories=_strings(raw.get("exclude_categories")),
            price_min=_float(raw.get("price_min")),
            price_max=_float(raw.get("price_max")),
            pins=pins,
            boosts=boosts,
            buries=buries,
            category_cap=cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None,
            mmr_lambda=mmr if mmr is not None and 0.0 <= mmr <= 1.0 else None,
            exploration=min(max(exploration, 0.0), 0.5),
        )


def _categories(item: Item) -> set[str]:
    return {str(c).lower() for c in (item.categories or []) if isinstance(c, str | int)}


def eligible(
    item: Item | None,
    *,
    rules: Rules,
    blocked: set[str],
    category: str,
    now: datetime,
) -> bool:
    """May this item be shown at all? Unknown items never are (their stock cannot be checked)."""
    if item is None or item.external_id in blocked:
        return False
    if rules.in_stock_only:
        if not item.in_stock:
            return False
        if item.available_from and item.available_from > now:
            return False
        if item.available_until and item.available_until < now:
            return False
    if category or rules.categories or rules.exclude_categories:  # most placements filter on none
        cats = _categories(item)
        if category and category.lower() not in cats:
            return False
        if rules.categories and not cats & {c.lower() for c in rules.categories}:
            return False
        if rules.exclude_categories and cats & {c.lower() for c in rules.exclude_categories}:
            return False
    if rules.price_min is not None or rules.price_max is not None:
        if item.price is None:
            return False
        price = float(item.price)
        if rules.price_min is not None and price < rules.price_min:
            return False
        if rules.price_max is not None and price > rules.price_max:
            return False
    return True

"""Demo storefront data: a catalogue and realistic visitor journeys, as raw events of our own API.

Deterministic for a given seed (message ids included), so seeding twice stores nothing twice.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

CATEGORIES = {
    "shoes": ["Trail runner", "City sneaker", "Leather boot", "Canvas slip-on", "Hiking boot", "Sandal"],
    "outerwear": ["Rain jacket", "Down parka", "Fleece", "Softshell", "Windbreaker"],
    "bags": ["Daypack", "Tote", "Weekender", "Messenger", "Hip pack"],
    "accessories": ["Wool beanie", "Sunglasses", "Water bottle", "Socks 3-pack", "Cap", "Gloves"],
    "home": ["Camp mug", "Blanket", "Lantern", "Hammock"],
}
COLOURS = ["black", "navy", "olive", "sand", "red"]

DEVICES = [
    (
        "desktop",
        0.45,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    ),
    (
        "desktop",
        0.12,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Safari/605.1.15",
    ),
    (
        "mobile",
        0.25,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (
        "mobile",
        0.12,
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Mobile Safari/537.36",
    ),
    (
        "tablet",
        0.06,
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1",
    ),
]
ARRIVALS = [
    (0.30, {}),
    (0.25, {"referrer": "https://www.google.com/"}),
    (0.12, {"campaign": {"source": "google", "medium": "cpc", "name": "winter-sale"}}),
    (0.12, {"referrer": "https://www.instagram.com/"}),
    (0.11, {"campaign": {"source": "newsletter", "medium": "email", "name": "weekly"}}),
    (0.10, {"referrer": "https://outdoorblog.example/best-gear"}),
]
COUNTRIES = [
    ("FR", "Europe/Paris"),
    ("DE", "Europe/Berlin"),
    ("GB", "Europe/London"),
    ("US", "America/New_York"),
    ("ES", "Europe/Madrid"),
    ("NL", "Europe/Amsterdam"),
]
SITE = "https://shop.example"


@dataclass(frozen=True)
class Product:
    item_id: str
    name: str
    category: str
    price: float


def catalogue() -> list[Product]:
    rng = random.Random(7)
    products = []
    for category, names in CATEGORIES.items():
        for name in names:
            for colour in rng.sample(COLOURS, 2):
                item_id = f"sku-{len(products) + 1:03d}"
                products.append(Product(item_id, f"{name} ({colour})", category, round(rng.uniform(12, 240), 2)))
    return products


def visitor_events(*, seed: int, visitors: int, days: int, now: datetime) -> Iterator[dict]:
    """Events of `visitors` visitors over the last `days` days: sessions of views, cart adds,
    abandoned carts and purchases; some return, some churn, some sign in."""
    rng = random.Random(seed)
    products = catalogue()
    by_category: dict[str, list[Product]] = {}
    for product in products:
        by_category.setdefault(product.category, []).append(product)
    for number in range(visitors):
        anonymous_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        _, _, user_agent = rng.choices(DEVICES, weights=[w for _, w, _ in DEVICES])[0]
        country, tz = rng.choice(COUNTRIES)
        favourite = rng.choice(list(CATEGORIES))
        profile_kind = rng.random()
        # Loyal visitors come back often; churning ones stop half-way; most come once or twice.
        sessions = rng.randint(5, 12) if profile_kind < 0.15 else rng.randint(2, 4) if profile_kind < 0.5 else 1
        churned = profile_kind > 0.85
        start = now - timedelta(days=rng.uniform(1, days))
        if churned:
            start = now - timedelta(days=days) + timedelta(days=rng.uniform(0, days / 3))
        user_id = f"user-{seed}-{number}" if rng.random() < 0.35 else None
        seq = 0
        when = start
        for _session in range(sessions):
            if when > now:
                break
            arrival = rng.choices(ARRIVALS, weights=[w for w, _ in ARRIVALS])[0][1]
            base_context = {
                "userAgent": user_agent,
                "timezone": tz,
                "location": {"country": country},
                "library": {"name": "demo-seed"},
            }
            if "campaign" in arrival:
                base_context["campaign"] = arrival["campaign"]
            cart: list[Product] = []
            page_views = rng.randint(1, 8)
            for view in range(page_views):
                category = favourite if rng.random() < 0.6 else rng.choice(list(CATEGORIES))
                product = rng.choice(by_category[category])
                page = {"url": f"{SITE}/p/{product.item_id}", "path": f"/p/{product.item_id}", "title": product.name}
                if view == 0 and "referrer" in arrival:
                    page["referrer"] = arrival["referrer"]
                seq += 1
                yield _event(
                    "product_view",
                    anonymous_id,
                    seed,
                    number,
                    seq,
                    when,
                    {
                        "item_id": product.item_id,
                        "name": product.name,
                        "category": product.category,
                        "price": product.price,
                    },
                    {**base_context, "page": page},
                )
                when += timedelta(seconds=rng.randint(15, 180))
                if rng.random() < 0.22:
                    cart.append(product)
                    seq += 1
                    yield _event(
                        "add_to_cart",
                        anonymous_id,
                        seed,
                        number,
                        seq,
                        when,
                        {
                            "item_id": product.item_id,
                            "price": product.price,
                            "quantity": 1,
                            "category": product.category,
                        },
                        {**base_context, "page": page},
                    )
            if cart and rng.random() < 0.45:
                if user_id and seq < 40:
                    seq += 1
                    traits = {
                        "plan": rng.choice(["free", "plus"]),
                        "first_name": rng.choice(["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatou", "Gus"]),
                    }
                    yield {
                        **_event("identify", anonymous_id, seed, number, seq, when, {}, base_context),
                        "user_id": user_id,
                        "traits": traits,
                    }
                seq += 1
                total = round(sum(p.price for p in cart), 2)
                yield {
                    **_event(
                        "purchase",
                        anonymous_id,
                        seed,
                        number,
                        seq,
                        when,
                        {
                            "order_id": f"o-{seed}-{number}-{seq}",
                            "revenue": total,
                            "currency": "EUR",
                            "items": [p.item_id for p in cart],
                        },
                        base_context,
                    ),
                    **({"user_id": user_id} if user_id else {}),
                }
            gap_days = rng.expovariate(1 / (2 if profile_kind < 0.15 else 6))
            when += timedelta(days=gap_days, hours=rng.uniform(0, 12))
            if churned and when > start + timedelta(days=days / 3):
                break


def _event(
    event_type: str,
    anonymous_id: str,
    seed: int,
    number: int,
    seq: int,
    when: datetime,
    properties: dict,
    context: dict,
) -> dict:
    return {
        "type": event_type,
        "anonymous_id": anonymous_id,
        "message_id": f"demo-{seed}-{number}-{seq}",
        "timestamp": when.isoformat(),
        "properties": properties,
        "context": context,
    }

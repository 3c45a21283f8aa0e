"""Shared helpers of the recommenders pipeline tests: send shopping journeys through the real
ingestion API, so matrices are built from events stored the way production stores them."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from recommenders.models import RecommenderConfig

GROUPS = {
    "shoes": [f"shoe-{i}" for i in range(8)],
    "bags": [f"bag-{i}" for i in range(8)],
    "home": [f"home-{i}" for i in range(8)],
}


def personalization_withdraw(anonymous_id: str) -> None:
    """The visitor refuses personalization in the consent banner."""
    from privacy.services.consent import consent_record
    from tracking.selectors import profile_by_anonymous_id

    profile = profile_by_anonymous_id(anonymous_id)
    consent_record(
        profile_id=profile.pk,
        decisions={"personalization": False},
        origin="banner",
        source=profile.last_source,
        policy_version=1,
    )


@pytest.fixture
def media_tmp(settings, tmp_path):
    """Artifacts of a test go to its own directory, not the checkout's media/."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def send(client, *events) -> None:
    for start in range(0, len(events), 500):
        response = client.post("/api/v1/events", {"events": list(events[start : start + 500])}, format="json")
        assert response.status_code == 200, response.json()


def view(anonymous_id: str, item: str, *, n: int, days_ago: float = 1.0, kind: str = "product_view", **props) -> dict:
    return {
        "type": kind,
        "anonymous_id": anonymous_id,
        "message_id": f"{kind}-{anonymous_id}-{n}",
        "timestamp": (timezone.now() - timedelta(days=days_ago)).isoformat(),
        "properties": {"item_id": item, **props},
    }


def journeys(visitors: int = 60, seed: int = 3, per_visitor: int = 8) -> list[dict]:
    """Visitors who each stick to one category, views spread over a few days: a learnable signal."""
    rng = random.Random(seed)
    events = []
    for v in range(visitors):
        group = list(GROUPS)[v % len(GROUPS)]
        items = rng.sample(GROUPS[group], per_visitor // 2 + 2)
        for n, item in enumerate(items):
            events.append(view(f"v{v}", item, n=n, days_ago=3 - n * 0.2))
            if rng.random() < 0.3:
                events.append(view(f"v{v}", item, n=100 + n, days_ago=3 - n * 0.2, kind="add_to_cart"))
    return events


def config(**fields) -> RecommenderConfig:
    defaults = {"key": "default", "name": "Default", "algorithm": "itemknn", "params": {}, "is_default": True}
    defaults.update(fields)
    return RecommenderConfig.objects.create(**defaults)


def near_seq(prefixes: tuple[str, ...]) -> int:
    """How many invalidations this process's near cache for `prefixes` has applied (see `near_told`)."""
    from personalization import hot_redis

    states = [s for (_, pid, p), s in hot_redis._near_state.items() if p == prefixes]
    return states[0].seq if states else 0


def near_told(prefixes: tuple[str, ...], since: int, timeout: float = 2.0) -> None:
    """Wait until Redis's invalidation of a write made by another connection has reached this
    process's near cache (applied after `since`, a `near_seq`). Redis writes it in the same pass
    as its reply to the writer, but the two are separate socket writes: a test reading right after
    the reply could otherwise run between them."""
    import time

    from personalization import hot_redis

    state = next(s for (_, pid, p), s in hot_redis._near_state.items() if p == prefixes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with state.lock:
            state.drain()
            if state.seq > since:
                return
        time.sleep(0.001)
    raise AssertionError("no invalidation reached the process")

"""Placements as serving reads them: the configuration behind a placement key, its size and its
merchandising rules, memoized per process for a few seconds (they change in the admin, rarely, and
are read on every request)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from recommenders.models import Collection, Placement, RecommenderConfig
from recommenders.serving.cache import LocalMemo

PLACEMENT_TTL = 10.0
DEFAULT_N = 10
_memo = LocalMemo(PLACEMENT_TTL)


@dataclass(frozen=True)
class PlacementView:
    key: str
    config_key: str | None  # None: no configuration exists, nothing is trained
    n: int
    weights: dict = field(default_factory=dict)  # the configuration's weight per event type
    half_life_days: float | None = None
    top_n: int = 0  # length of the precomputed lists
    rules: dict = field(default_factory=dict)
    collection_id: int | None = None  # the placement's own curated list for new visitors
    default_collection_id: int | None = None  # the installation's new-visitor default
    known: bool = False


def placement_view(*, key: str) -> PlacementView:
    """What serving needs of a placement. A key no placement has yet is served with the defaults
    (and still recorded with what is served, so its CTR shows before anyone configures it)."""
    found = _memo.get(("placement", key))
    if found is not None:
        return found
    from recommenders.selectors import config_default

    placement = Placement.objects.select_related("config").filter(key=key).first() if key else None
    config = placement.config if placement is not None and placement.config is not None else config_default()
    default_collection_id = (
        Collection.objects.filter(is_new_visitor_default=True).order_by("pk").values_list("pk", flat=True).first()
    )
    view = PlacementView(
        key=key,
        config_key=config.key if config is not None else None,
        weights=_event_weights(config),
        half_life_days=config.half_life_days if config is not None else None,
        top_n=config.top_n if config is not None else 0,
        n=placement.n if placement is not None and placement.n else DEFAULT_N,
        rules=dict(placement.rules or {}) if placement is not None and isinstance(placement.rules, dict) else {},
        collection_id=placement.fallback_collection_id if placement is not None else None,
        default_collection_id=default_collection_id,
        known=placement is not None,
    )
    _memo.set(("placement", key), view)
    return view


def placement_view_with_config(view: PlacementView, config_key: str) -> PlacementView:
    """The placement served with another recommender configuration (a recommender experiment's
    variant): its event weights, half-life and list length; the placement's own rules stay."""
    if config_key == view.config_key:
        return view
    found = _memo.get(("arm", view.key, config_key))
    if found is not None:
        return found
    config = RecommenderConfig.objects.filter(key=config_key).first()
    if config is None:
        return view  # an experiment naming a configuration that does not exist: serve the placement's
    armed = replace(
        view,
        config_key=config.key,
        weights=_event_weights(config),
        half_life_days=config.half_life_days,
        top_n=config.top_n,
    )
    _memo.set(("arm", view.key, config_key), armed)
    return armed


def _event_weights(config) -> dict[str, float]:
    from recommenders.models import default_event_weights

    weights = config.event_weights if config is not None else default_event_weights()
    return {
        str(t): float(w)
        for t, w in (weights or {}).items()
        if isinstance(w, int | float) and not isinstance(w, bool) and w and not t.startswith("thumbs_")
    }


def placements_forget() -> None:
    _memo.clear()

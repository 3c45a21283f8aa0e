"""Recommendation insight for the admin: one profile's recent events, and what each algorithm
would recommend to it and why, next to what the API would serve. Read-only: nothing is logged as
served. Algorithms other than the live one are fitted on the live version's training matrix and
memoized per version, so the comparison is like for like."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from recommenders.models import Item
from recommenders.registry import LoadedModel
from recommenders.serving import personal
from recommenders.serving.lists import live_or_none, reason_text
from recommenders.serving.personal import Candidate
from recommenders.serving.placements import placement_view
from recommenders.serving.recommend import recommendations_serve
from recommenders.serving.visitors import History, history_load, personalization_allowed, stated_preferences
from tracking.models import Event, Profile

logger = logging.getLogger(__name__)

# Fitting EASE inverts an items x items matrix: alternatives are fitted for the page only up to this.
MAX_ITEMS_TO_FIT = 3000
RECENT_EVENTS = 20
ALTERNATIVES = (
    ("Popularity", "popularity"),
    ("Item-to-item (ItemKNN)", "itemknn"),
    ("Content (TF-IDF of title, description, tags + categories)", "content"),
    ("Hybrid (blend by activity: the cold-start ladder)", "hybrid"),
)

_fitted: dict[tuple[str, int, str], object] = {}
_lock = threading.Lock()


@dataclass
class Row:
    item: str
    title: str
    score: float
    algorithm: str
    reason: str


@dataclass
class Column:
    name: str
    note: str = ""
    rows: list[Row] = field(default_factory=list)


@dataclass
class Insight:
    profile: Profile
    personalized: bool
    events: list[dict]
    history: History
    preferences: tuple[tuple[str, ...], tuple[str, ...]]
    segments: list[str]
    model: str
    columns: list[Column]


def _alternative(loaded: LoadedModel, name: str):
    """`name` fitted on the live version's matrix (memoized per version); None if too big."""
    from recommenders.algorithms import build

    if loaded.algorithm == name:
        return loaded.recommender
    key = (loaded.config_key, loaded.version, name)
    model = _fitted.get(key)
    if model is not None:
        return model
    if len(loaded.item_ids) > MAX_ITEMS_TO_FIT:
        return None
    with _lock:
        if key not in _fitted:
            for stale in [k for k in _fitted if k[:2] != key[:2]]:
                _fitted.pop(stale, None)
            _fitted[key] = build(name).fit(loaded.user_items, item_features=loaded.item_features)
        return _fitted[key]


def _scored(loaded: LoadedModel, model, *, profile: Profile, history: History, n: int, context=None) -> list[Candidate]:
    row = personal.fresh_row(loaded, profile.pk, history)
    blocked = [loaded.item_index[i] for i in history.thumbs_down if i in loaded.item_index]
    ids, scores = model.recommend_fresh(
        row, N=n, filter_items=np.asarray(blocked, dtype=np.int64) if blocked else None, context=context
    )
    found = [
        Candidate(str(loaded.item_ids[i]), float(s), model.name)
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True)
        if np.isfinite(s)
    ]
    if model is loaded.recommender:
        personal.explain_blend(loaded, found, row, history, context)  # which member of a blend, too
    if model.name in ("popularity", "trending"):
        for candidate in found:
            candidate.reason = "popular with other visitors"
    else:
        personal.explain(loaded, found, history, recommender=model)
    return found


def _rows(candidates: list[Candidate]) -> list[Row]:
    items = {
        i.external_id: i
        for i in Item.objects.filter(external_id__in=[c.item for c in candidates] + [c.anchor for c in candidates])
    }
    return [
        Row(
            c.item,
            items[c.item].title if c.item in items else "(not in the catalogue)",
            c.score,
            c.algorithm,
            reason_text(c, items),
        )
        for c in candidates
    ]


def profile_insight(*, profile: Profile, placement: str = "", n: int = 10) -> Insight:
    from recommenders.algorithms.base import Preferences, UserContext
    from segments.selectors import profile_segment_keys

    view = placement_view(key=placement)
    loaded = live_or_none(view.config_key)
    history = history_load(profile=profile, weights=view.weights, half_life_days=view.half_life_days)
    source = profile.last_source
    personalized = source is None or personalization_allowed(profile=profile, source=source)
    events = list(
        Event.objects.filter(profile=profile)
        .order_by("-timestamp", "-id")
        .values("timestamp", "type", "properties", "device_type", "country")[:RECENT_EVENTS]
    )
    for entry in events:
        props = entry["properties"] if isinstance(entry["properties"], dict) else {}
        entry["item"] = props.get("item_id") or props.get("product_id") or ""
    preferences = stated_preferences(profile)
    columns: list[Column] = []
    if source is not None:
        served = recommendations_serve(source=source, profile=profile, placement=placement, n=n, record=False)
        columns.append(
            Column(
                "What the API serves",
                f"strategy: {served.strategy}" + ("" if personalized else " (no personalization consent)"),
                [Row(s.item.external_id, s.item.title, s.score, s.algorithm, s.reason) for s in served.items],
            )
        )
    if loaded is None:
        return Insight(
            profile,
            personalized,
            events,
            history,
            preferences,
            profile_segment_keys(profile_id=profile.pk),
            "no live model",
            columns,
        )
    context = UserContext(
        preferences=[Preferences(*preferences)],
        recent_items=[[loaded.item_index[i] for i in history.session_items[:5] if i in loaded.item_index]],
    )
    algorithms = [(f"Live model: {loaded.algorithm} v{loaded.version}", loaded.algorithm)]
    algorithms += [(title, name) for title, name in ALTERNATIVES if name != loaded.algorithm]
    for title, name in algorithms:
        try:
            model = _alternative(loaded, name)
        except Exception as exc:  # the page shows why an algorithm has nothing to say
            columns.append(Column(title, f"could not be fitted: {exc}"))
            continue
        if model is None:
            columns.append(Column(title, f"not fitted for the page above {MAX_ITEMS_TO_FIT:,} items"))
            continue
        found = _scored(loaded, model, profile=profile, history=history, n=n, context=context)
        note = "" if name == loaded.algorithm else f"fitted on v{loaded.version}'s training matrix, for comparison"
        columns.append(Column(title, note, _rows(found)))
    session = personal.session_candidates(loaded, history=history, depth=n, allowed=None, blocked=set())
    columns.append(Column("Session item-to-item (cold-start rung)", "", _rows(session)))
    return Insight(
        profile,
        personalized,
        events,
        history,
        preferences,
        profile_segment_keys(profile_id=profile.pk),
        f"{loaded.config_key} v{loaded.version} ({loaded.algorithm})",
        columns,
    )

"""Serving orchestration: what one visitor is shown in one placement.

The read path, cheapest first: the visitor's precomputed list in the cache (while it is newer than
their events) -> recomputed from the live model in memory and re-cached -> the cold-start ladder
(item-to-item from the session, content from stated preferences) -> curated collection and trending
in the visitor's segment and context. Every step survives a cache outage. A visitor whose consent
does not allow personalization gets non-personalized trending only: their history is not even read.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.conf import settings

from recommenders import cache_keys
from recommenders.experiment_arms import recommender_arm
from recommenders.registry import LoadedModel
from recommenders.serving import personal
from recommenders.serving.lists import ListBuilder, ServedList, fallback_stages, list_finish, live_or_none
from recommenders.serving.placements import PlacementView, placement_view, placement_view_with_config
from recommenders.serving.rules import Rules
from recommenders.serving.trending import Slice
from recommenders.serving.visitors import (
    UNKNOWN,
    Context,
    History,
    Visitor,
    history_load,
    hour_band,
    personalization_allowed,
    request_context,
    stated_preferences,
    visitor_confirm,
    visitor_is_current,
    visitor_refresh,
)
from tracking.models import Profile, Source


def _visitor_slices(profile: Profile | None, context: Context) -> list[tuple[Slice, str]]:
    """The visitor's segment (their most specific one with enough members), then their context,
    from the narrowest combination to none."""
    slices: list[tuple[Slice, str]] = []
    if profile is not None:
        from segments.selectors import profile_segment_keys, segment_list

        keys = profile_segment_keys(profile_id=profile.pk)
        if keys:
            segment = (
                segment_list()
                .filter(key__in=keys, member_count__gte=settings.RECOMMENDERS_TRENDING_MIN_SEGMENT)
                .order_by("member_count", "key")
                .first()
            )
            if segment is not None:
                slices.append((Slice(segment=segment.key), segment.name))
    wanted = [
        Slice(device=context.device, country=context.country),
        Slice(device=context.device),
        Slice(country=context.country),
        Slice(band=context.band),
    ]
    seen: set[Slice] = set()
    for slice_ in wanted:
        if not slice_.is_global and slice_ not in seen:
            seen.add(slice_)
            slices.append((slice_, ""))
    slices.append((Slice(), ""))
    return slices


def _category_columns(loaded: LoadedModel, category: str) -> np.ndarray | None:
    if not category or loaded.item_features is None:
        return None
    wanted = category.lower()
    cols = [i for i, cats in enumerate(loaded.item_features.categories) if wanted in {str(c).lower() for c in cats}]
    return np.asarray(cols, dtype=np.int64)


def _blocked_columns(loaded: LoadedModel, blocked: set[str]) -> np.ndarray | None:
    cols = [loaded.item_index[i] for i in blocked if i in loaded.item_index]
    return np.asarray(cols, dtype=np.int64) if cols else None


def _personal_stage(
    builder: ListBuilder,
    *,
    loaded: LoadedModel | None,
    profile: Profile,
    history: History,
    category: str,
    top_n: int,
) -> str:
    """Feed the builder from the models, following the cold-start ladder; returns the strategy."""
    strategy = ""
    anchors = history.positive_items[: personal.ANCHORS]
    if loaded is not None:
        allowed = _category_columns(loaded, category)
        if allowed is not None and not len(allowed):
            return ""  # the model knows no item of that category: the fallbacks may
        row = personal.fresh_row(loaded, profile.pk, history)
        known = set(row.indices[row.data > 0].tolist())  # items they showed interest in (not thumbs-down)
        if loaded.algorithm == "hybrid" or len(known) >= settings.RECOMMENDERS_COLD_START_ITEMS:
            found, strategy = personal.model_candidates(
                loaded,
                profile_id=profile.pk,
                history=history,
                depth=builder.wanted,
                allowed=allowed,
                blocked=_blocked_columns(loaded, builder.blocked),
                published_n=top_n,
            )
            builder.add(found, [c.anchor for c in found])
        if not builder.full and (known or history.session_items):
            blocked_cols = _blocked_columns(loaded, builder.blocked)
            blocked = set(blocked_cols.tolist()) if blocked_cols is not None else set()
            found = personal.session_candidates(
                loaded, history=history, depth=builder.wanted, allowed=allowed, blocked=blocked
            )
            if builder.add(found, anchors) and not strategy:
                strategy = "session"
    if not builder.full:
        categories, tags = stated_preferences(profile)
        found = personal.preference_candidates(loaded, categories=categories, tags=tags, depth=builder.wanted)
        if builder.add(found) and not strategy:
            strategy = "preferences"
    return strategy


def _hybrid_context(loaded: LoadedModel, profile: Profile, history: History):
    from recommenders.algorithms.base import Preferences, UserContext

    categories, tags = stated_preferences(profile)
    recent = [loaded.item_index[i] for i in history.session_items[: personal.ANCHORS] if i in loaded.item_index]
    # No stated preferences: say so with None rather than an empty Preferences. Both mean "nothing
    # stated" to every algorithm (the hybrid's ladder tests truthiness, content adds a zero vector),
    # but None spares content building that zero vector: a quarter of a recompute-on-read.
    preferences = [Preferences(categories, tags)] if categories or tags else None
    return UserContext(preferences=preferences, recent_items=[recent])


def recommendations_serve(
    *,
    source: Source,
    profile: Profile | None,
    placement: str = "",
    n: int | None = None,
    category: str = "",
    exclude: Iterable[str] = (),
    meta: dict | None = None,
    record: bool = True,
    consent=UNKNOWN,
    visitor: Visitor | None = None,
) -> ServedList:
    """The list one visitor sees in one placement, and the row that logs it (its token).
    `consent`: the visitor's personalization consent state when the caller read it with the
    profile (see `visitors.visitor_by_anonymous_id`); read here otherwise.
    `visitor`: instead of `profile` and `consent`, the visitor as the API found them, maybe from the
    visitor cache: such an entry is confirmed here, on the hot path with the same round trip that
    reads their precomputed list, and read again from the database when their profile changed."""
    view = placement_view(key=placement)
    # A running recommender experiment decides the configuration for its units (assigned, and exposed
    # at first use, like any experiment unit); the list records the variant it was served under.
    subject = visitor.profile if visitor is not None else profile
    arm = recommender_arm(source_id=source.pk, profile_id=subject.pk if subject is not None else None)
    if arm is not None:
        view = placement_view_with_config(view, arm.config_key)
    variant = arm.label if arm is not None else ""
    n = min(n or view.n, settings.RECOMMENDERS_SERVE_MAX_N)
    rules = _rules(view)
    loaded = live_or_none(view.config_key)
    blocked = {str(e) for e in exclude}
    toplist = personal._UNREAD
    if visitor is not None and visitor.read_at is not None:
        allowed = personalization_allowed(profile=visitor.profile, source=source, state=visitor.consent)
        if allowed and loaded is not None and not category:
            toplist, stamp = personal.toplist_and_stamp(loaded, visitor.profile.pk, visitor.prefetched)
            if not visitor_is_current(visitor, stamp):
                visitor, toplist = visitor_refresh(visitor), personal._UNREAD
        else:
            visitor = visitor_confirm(visitor)
    elif visitor is not None and visitor.prefetched is not None and loaded is not None and not category:
        # Read from the database just now: no stamp to check, and the list came with the look-up.
        toplist, _ = personal.toplist_and_stamp(loaded, visitor.profile.pk, visitor.prefetched)
    if visitor is not None:
        profile, consent = visitor.profile, visitor.consent
    elif consent is UNKNOWN and profile is None:
        consent = None
    personalized = profile is not None and personalization_allowed(profile=profile, source=source, state=consent)
    strategy = ""
    if personalized and loaded is not None and not category:
        fast = _from_cache_only(loaded, profile=profile, n=n, rules=rules, blocked=blocked, toplist=toplist)
        if fast is not None:
            return list_finish(
                fast,
                placement=view.key,
                rules=rules,
                strategy="cached",
                personalized=True,
                profile=profile,
                loaded=loaded,
                record=record,
                variant=variant,
            )
    if personalized:
        history = history_load(profile=profile, weights=view.weights, half_life_days=view.half_life_days)
        blocked |= history.thumbs_down
        if rules.exclude_purchased:
            blocked |= history.purchased
        if rules.exclude_seen:
            blocked |= history.seen
        builder = ListBuilder(n=n, rules=rules, blocked=blocked, category=category)
        strategy = _serve_personal(
            builder, loaded=loaded, profile=profile, history=history, category=category, top_n=view.top_n
        )
        context = Context(
            device=profile.last_device_type, country=profile.last_country, band=hour_band(history.local_hour)
        )
        if not builder.full:
            fallback = fallback_stages(builder, loaded=loaded, view=view, slices=_visitor_slices(profile, context))
            strategy = strategy or fallback
    else:
        builder = ListBuilder(n=n, rules=rules, blocked=blocked, category=category)
        if profile is None and personalization_allowed(profile=None, source=source):
            # A first visit: nothing personal is known, the request's context (device, country) is.
            slices = _visitor_slices(None, request_context(meta or {}))
            strategy = fallback_stages(builder, loaded=loaded, view=view, slices=slices)
        else:
            # No consent to personalize: the same trending list everyone gets, nothing of theirs read.
            strategy = fallback_stages(
                builder, loaded=loaded, view=PlacementView(key=view.key, config_key=None, n=n), slices=[(Slice(), "")]
            )
    return list_finish(
        builder,
        placement=view.key,
        rules=rules,
        strategy=strategy,
        personalized=personalized,
        profile=profile,
        loaded=loaded,
        record=record,
        variant=variant,
    )


def toplist_prefix_for(placement: str) -> str:
    """Key prefix of the lists the placement's live model published ('' when it has none): the
    API reads a visitor's list together with the visitor. A recommender experiment may serve the
    visitor another configuration: its list is then read apart."""
    loaded = live_or_none(placement_view(key=placement).config_key)
    return cache_keys.toplist_prefix(loaded.config_key, loaded.version) if loaded is not None else ""


_parsed: dict[int, tuple[PlacementView, Rules]] = {}


def _rules(view: PlacementView) -> Rules:
    """The placement's rules, parsed once per memoized placement view (not per page view)."""
    hit = _parsed.get(id(view))
    if hit is not None and hit[0] is view:
        return hit[1]
    rules = Rules.parse(view.rules)
    if len(_parsed) > 1000:
        _parsed.clear()
    _parsed[id(view)] = (view, rules)
    return rules


def _from_cache_only(
    loaded: LoadedModel, *, profile: Profile, n: int, rules: Rules, blocked: set[str], toplist=personal._UNREAD
) -> ListBuilder | None:
    """The hot path: the visitor's cached list, when it is certainly newer than anything they did,
    with the reasons stored in it (computed when it was published or recomputed); no read of their
    events or feedback (giving feedback drops the cached list). None when that is not enough to fill
    the list: the full path decides.
    `toplist`: their precomputed list when the caller has read it already."""
    toplist = personal.fresh_toplist(loaded, profile, toplist)
    if toplist is None:
        return None
    builder = ListBuilder(n=n, rules=rules, blocked=blocked, category="")
    builder.add_ranked(toplist.item_ids, toplist.scores, loaded.algorithm, because=toplist.because)
    if not builder.full:  # the rules left too few: the full path pads it (session, trending ...)
        return None
    if toplist.slots is None:  # stored before lists carried their reasons
        personal.explain_cached(loaded, builder.kept, profile.pk)
    builder.fetch(c.anchor for c in builder.kept)
    return builder


def _serve_personal(
    builder: ListBuilder, *, loaded: LoadedModel | None, profile: Profile, history: History, category: str, top_n: int
) -> str:
    if loaded is not None and loaded.algorithm == "hybrid":
        categories, tags = stated_preferences(profile)
        if history.positive_items or categories or tags:
            allowed = _category_columns(loaded, category)
            if allowed is None or len(allowed):
                found, strategy = personal.model_candidates(
                    loaded,
                    profile_id=profile.pk,
                    history=history,
                    depth=builder.wanted,
                    allowed=allowed,
                    blocked=_blocked_columns(loaded, builder.blocked),
                    context=_hybrid_context(loaded, profile, history),
                    published_n=top_n,
                )
                if builder.add(found, [c.anchor for c in found]):
                    return strategy
    return _personal_stage(builder, loaded=loaded, profile=profile, history=history, category=category, top_n=top_n)

"""Lists that are not about one visitor's history: items similar to an item, and what trends in
a segment or context."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.conf import settings

from recommenders.models import Item
from recommenders.serving.lists import ListBuilder, ServedList, fallback_stages, list_finish, live_or_none
from recommenders.serving.personal import Candidate
from recommenders.serving.placements import PlacementView, placement_view
from recommenders.serving.rules import Rules
from recommenders.serving.trending import Slice
from recommenders.serving.visitors import personalization_allowed
from tracking.models import Profile, Source


class ItemNotFound(Exception):
    pass


def items_similar(
    *,
    source: Source,
    external_id: str,
    profile: Profile | None = None,
    placement: str = "",
    n: int | None = None,
    exclude: Iterable[str] = (),
) -> ServedList:
    """Items like one item: the live model's item-to-item similarity, else items sharing its
    categories and tags; padded with what trends. The visitor's thumbs-down are honoured."""
    anchor = (
        Item.objects.filter(external_id=external_id).only(*("id", "external_id", "title", "categories", "tags")).first()
    )
    if anchor is None:
        raise ItemNotFound(external_id)
    view = placement_view(key=placement or "similar")
    n = min(n or view.n, settings.RECOMMENDERS_SERVE_MAX_N)
    rules = Rules.parse(view.rules)
    loaded = live_or_none(view.config_key)
    blocked = {str(e) for e in exclude} | {anchor.external_id}
    personalized = profile is not None and personalization_allowed(profile=profile, source=source)
    if personalized:
        from recommenders.models import Feedback

        blocked |= set(
            Feedback.objects.filter(profile_id=profile.pk, kind=Feedback.Kind.DOWN).values_list(
                "item__external_id", flat=True
            )
        )
    builder = ListBuilder(n=n, rules=rules, blocked=blocked, category="")
    title = anchor.title or anchor.external_id
    strategy = ""
    if loaded is not None and anchor.external_id in loaded.item_index and loaded.recommender.has_similar_items:
        col = loaded.item_index[anchor.external_id]
        ids, sims = loaded.recommender.similar_items(col, N=builder.wanted + len(blocked))
        found = [
            Candidate(str(loaded.item_ids[i]), float(s), "item_to_item", reason=f"similar to {title}")
            for i, s in zip(ids.tolist(), sims.tolist(), strict=True)
            if np.isfinite(s) and s > 0
        ]
        if builder.add(found):
            strategy = "similar"
    if not builder.full and builder.add(_content_like(anchor, depth=builder.wanted)) and not strategy:
        strategy = "content"
    if not builder.full:
        fallback = fallback_stages(
            builder, loaded=loaded, view=PlacementView(key=view.key, config_key=None, n=n), slices=[(Slice(), "")]
        )
        strategy = strategy or fallback
    return list_finish(
        builder,
        placement=view.key,
        rules=rules,
        strategy=strategy,
        personalized=personalized,
        profile=profile,
        loaded=loaded,
    )


def _content_like(anchor: Item, *, depth: int) -> list[Candidate]:
    """Catalogue items sharing the anchor's categories (each shared category counts twice) and
    tags, most overlap first."""
    from recommenders.selectors import item_list

    cats = [str(c) for c in anchor.categories or [] if isinstance(c, str | int)]
    tags = {str(t).lower() for t in anchor.tags or [] if isinstance(t, str | int)}
    if not cats and not tags:
        return []
    scored: dict[str, tuple[float, str]] = {}
    for category in cats[:5]:
        for external_id, item_cats, item_tags in item_list(category=category, in_stock=True).values_list(
            "external_id", "categories", "tags"
        )[: settings.RECOMMENDERS_SERVE_CONTENT_SCAN]:
            shared_c = {str(c).lower() for c in item_cats or []} & {c.lower() for c in cats}
            shared_t = {str(t).lower() for t in item_tags or []} & tags
            score = 2.0 * len(shared_c) + len(shared_t)
            if score > scored.get(external_id, (0.0, ""))[0]:
                scored[external_id] = (score, category)
    ranked = sorted(scored.items(), key=lambda kv: (-kv[1][0], kv[0]))[:depth]
    return [Candidate(item, score, "content", reason=f"also in {category}") for item, (score, category) in ranked]


def trending_serve(
    *,
    slice_: Slice,
    placement: str = "",
    n: int | None = None,
    category: str = "",
    exclude: Iterable[str] = (),
) -> ServedList:
    """What trends in a slice (segment, device, country, hour band), padded from wider slices."""
    view = placement_view(key=placement or "trending")
    n = min(n or view.n, settings.RECOMMENDERS_SERVE_MAX_N)
    rules = Rules.parse(view.rules)
    builder = ListBuilder(n=n, rules=rules, blocked={str(e) for e in exclude}, category=category)
    slices = [(slice_, slice_.segment)]
    if not slice_.is_global:
        slices.append((Slice(), ""))
    strategy = fallback_stages(
        builder,
        loaded=live_or_none(view.config_key),
        view=PlacementView(key=view.key, config_key=None, n=n),
        slices=slices,
    )
    return list_finish(
        builder,
        placement=view.key,
        rules=rules,
        strategy=strategy,
        personalized=False,
        profile=None,
        loaded=None,
    )

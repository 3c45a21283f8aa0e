"""Building one served list: candidates stage by stage through the rules, the fallback stages
(curated collections, trending slices, popularity), the placement's ordering, the reasons, and the
log of the list served (its token comes back on impression and click events)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.utils import timezone

from recommenders.models import CollectionItem, Item
from recommenders.registry import LoadedModel, live_model
from recommenders.serving import personal
from recommenders.serving.items import items_fetch
from recommenders.serving.personal import Candidate
from recommenders.serving.placements import PlacementView
from recommenders.serving.rules import Rules, eligible
from recommenders.serving.served import ServedRow
from recommenders.serving.trending import Slice, trending_items
from tracking.models import Profile

logger = logging.getLogger(__name__)

REASON_TEMPLATES = {
    "viewed": "because you viewed {title}",
    "bought": "because you bought {title}",
    "added to your cart": "because you added {title} to your cart",
    "liked": "because you liked {title}",
}


@dataclass
class ServedItem:
    item: Item
    score: float
    algorithm: str
    reason: str


@dataclass
class ServedList:
    token: uuid.UUID
    placement: str
    items: list[ServedItem]
    strategy: str
    personalized: bool
    model_version: int | None = None
    explain: dict = field(default_factory=dict)
    variant: str = ""  # "experiment:variant" when a recommender experiment chose the configuration


def live_or_none(config_key: str | None) -> LoadedModel | None:
    if not config_key:
        return None
    try:
        return live_model(config_key)
    except Exception:  # a broken artifact must not take the page down: the ladder still answers
        logger.exception("live model of %s could not be loaded; serving fallbacks", config_key)
        return None


class ListBuilder:
    """Collects candidates stage by stage, keeping those that pass the rules, until enough are in."""

    def __init__(self, *, n: int, rules: Rules, blocked: set[str], category: str) -> None:
        self.n = n
        self.rules = rules
        self.blocked = set(blocked)
        self.category = category
        self.now = timezone.now()
        self.kept: list[Candidate] = []
        self.items: dict[str, Item] = {}
        self._ids: set[str] = set()

    @property
    def target(self) -> int:
        """Candidates to keep before the ordering rules: buried items may drop out of the top, and
        caps, diversity and exploration need a choice beyond the first n (fixed once built)."""
        target = self.__dict__.get("_target")
        if target is None:
            rules = self.rules
            spare = self.n * 2 if (rules.category_cap or rules.mmr_lambda is not None or rules.exploration) else 0
            target = self._target = self.n + len(rules.buries) + spare
        return target

    @property
    def wanted(self) -> int:
        """Candidates to ask a stage for: the rest to fill, with room for filtering and rules."""
        return max(0, self.target - len(self.kept)) * 3 + 10 + len(self.rules.pins)

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.target

    def fetch(self, external_ids: Iterable[str]) -> None:
        need = [i for i in dict.fromkeys(external_ids) if i and i not in self.items]
        if need:
            self.items.update(items_fetch(need))

    def add_ranked(
        self,
        item_ids: Sequence[str],
        scores: Sequence[float],
        algorithm: str,
        because: Callable[[int], tuple[str, str]] | None = None,
    ) -> int:
        """`add` for one source's ranked list (a precomputed top-N): a candidate is built only for
        an item kept, and catalogue rows are read a few more than still wanted at a time.
        `because(position)`: the (anchor, verb) explaining the item there, when the list says."""
        kept, ids, blocked, items = self.kept, self._ids, self.blocked, self.items
        rules, category, now, target = self.rules, self.category, self.now, self.target
        added = start = 0
        total = len(item_ids)
        while start < total and len(kept) < target:
            end = min(total, start + target - len(kept) + 5)
            need = [i for i in item_ids[start:end] if i not in items]
            if need:
                items.update(items_fetch(need))
            for pos in range(start, end):
                item_id = item_ids[pos]
                if item_id in ids or not eligible(
                    items.get(item_id), rules=rules, blocked=blocked, category=category, now=now
                ):
                    continue
                ids.add(item_id)
                candidate = Candidate(item_id, scores[pos], algorithm)
                if because is not None:
                    candidate.anchor, candidate.verb = because(pos)
                kept.append(candidate)
                added += 1
                if len(kept) >= target:
                    break
            start = end
        return added

    def add(self, candidates: Iterable[Candidate], extra_ids: Iterable[str] = (), *, beyond: bool = False) -> int:
        """Keep the candidates the rules allow, best first, until the list is full; catalogue rows
        are read in small chunks, so a long candidate list costs only what it takes to fill.
        `beyond`: add even past full (pins, which the ordering places at their positions)."""
        fresh = [c for c in candidates if c.item not in self._ids and c.item not in self.blocked]
        self.fetch(extra_ids)
        added = 0
        start = 0
        while start < len(fresh) and (beyond or not self.full):
            chunk = fresh[start : start + max(self.target - len(self.kept), 0) * 2 + 5]
            start += len(chunk)
            self.fetch(c.item for c in chunk)
            for candidate in chunk:
                if candidate.item in self._ids or (self.full and not beyond):
                    continue
                if eligible(
                    self.items.get(candidate.item),
                    rules=self.rules,
                    blocked=self.blocked,
                    category=self.category,
                    now=self.now,
                ):
                    self._ids.add(candidate.item)
                    self.kept.append(candidate)
                    added += 1
        return added


def exploration_pool(builder: ListBuilder) -> list[Candidate]:
    """Items a placement's exploration share draws from: the newest in-stock items and what trends
    overall, those the rules allow and the list does not have yet."""
    if not builder.rules.exploration:
        return []
    pool = ListBuilder(
        n=builder.n * 2, rules=builder.rules, blocked=builder.blocked | builder._ids, category=builder.category
    )
    newest = (
        Item.objects.filter(in_stock=True, is_stub=False).order_by("-created_at").values_list("external_id", flat=True)
    )[: builder.n]
    pool.add([Candidate(i, 0.0, "exploration") for i in newest])
    pool.add([Candidate(i, s, "exploration") for i, s in trending_items(slice_=Slice())[: builder.n * 2]])
    builder.items.update(pool.items)
    return pool.kept


def reason_text(candidate: Candidate, items: dict[str, Item]) -> str:
    if candidate.anchor:
        anchor = items.get(candidate.anchor)
        title = anchor.title if anchor is not None and anchor.title else candidate.anchor
        return REASON_TEMPLATES.get(candidate.verb, REASON_TEMPLATES["viewed"]).format(title=title)
    return candidate.reason or "based on your recent activity"


def collection_candidates(collection_id: int | None, *, depth: int) -> list[Candidate]:
    if collection_id is None:
        return []
    rows = (
        CollectionItem.objects.filter(collection_id=collection_id)
        .select_related("collection")
        .order_by("position", "id")
        .values_list("item__external_id", "collection__name", "collection__key")[:depth]
    )
    return [
        Candidate(item, float(depth - rank), "collection", reason=f"from our selection {name or key}")
        for rank, (item, name, key) in enumerate(rows)
    ]


def trending_stage(slice_: Slice, segment_name: str, *, depth: int) -> Callable[[], list[Candidate]]:
    """A stage serving one slice's trending list; the list is computed (or read) only when reached."""

    def run() -> list[Candidate]:
        reason = slice_.reason(segment_name)
        return [Candidate(item, score, "trending", reason=reason) for item, score in trending_items(slice_=slice_)][
            :depth
        ]

    return run


def fallback_stages(
    builder: ListBuilder,
    *,
    loaded: LoadedModel | None,
    view: PlacementView,
    slices: list[tuple[Slice, str]],
) -> str:
    """Curated collection of the placement, trending from the narrowest slice to all visitors,
    the installation's default collection, then the live model's overall popularity."""
    strategy = ""
    stages: list[tuple[str, Callable[[], list[Candidate]]]] = [
        ("collection", lambda: collection_candidates(view.collection_id, depth=builder.wanted))
    ]
    for slice_, segment_name in slices:
        stages.append(("trending", trending_stage(slice_, segment_name, depth=builder.wanted)))
    stages.append(("collection", lambda: collection_candidates(view.default_collection_id, depth=builder.wanted)))
    if loaded is not None:
        stages.append(("popularity", lambda: personal.popular_candidates(loaded, depth=builder.wanted)))
    for name, stage in stages:
        if builder.full:
            break
        if builder.add(stage()) and not strategy:
            strategy = name
    return strategy


def list_finish(
    builder: ListBuilder,
    *,
    placement: str,
    rules: Rules,
    strategy: str,
    personalized: bool,
    profile: Profile | None,
    loaded: LoadedModel | None,
    record: bool = True,
    variant: str = "",
) -> ServedList:
    """Apply the placement's ordering rules, write the reasons, and log the list served (unless
    `record` is off: the admin's insight page shows what would be served without serving it).
    `variant`: the recommender experiment's "experiment:variant" this list was served under."""
    pinned = [p for p in rules.pins if p not in builder._ids]
    if pinned:
        builder.add([Candidate(p, 0.0, "pinned", reason="featured") for p in pinned], beyond=True)
    from recommenders.serving.merchandise import merchandise, reorders

    final = (
        builder.kept[: builder.n]
        if not reorders(rules)
        else merchandise(
            builder.kept,
            builder.items,
            rules,
            builder.n,
            exploration_pool=exploration_pool(builder),
            seed_key=str(profile.uuid) if profile is not None else placement,
        )
    )
    served = [
        ServedItem(builder.items[c.item], float(c.score), c.algorithm, reason_text(c, builder.items)) for c in final
    ]
    model_family = {"collection", "trending", "popularity", "content", "pinned"}
    from_model = loaded is not None and any(s.algorithm not in model_family for s in served)
    row = ServedRow(
        profile_id=profile.pk if personalized and profile is not None else None,
        placement=placement[:64],
        model_version_id=loaded.model_version_id if from_model else None,
        algorithm=(served[0].algorithm if served else "")[:64],
        items=[s.item.external_id for s in served],
        variant=variant[:100],
    )
    if record:
        served_log(row)
    return ServedList(
        token=row.token,
        placement=placement,
        items=served,
        strategy=strategy or ("empty" if not served else "fallback"),
        personalized=personalized,
        model_version=loaded.version if from_model else None,
        variant=variant,
    )


def served_log(row: ServedRow) -> None:
    """Log a served list: buffered in Redis and written in bulk (see `recommenders.serving.served`),
    or written now when Redis is not there."""
    from recommenders.serving.served import served_record

    served_record(row=row)

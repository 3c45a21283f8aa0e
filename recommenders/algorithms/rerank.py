"""Re-ranking and merchandising rules, applied after scoring and the same for every algorithm.

Pure functions over arrays and dataclasses. Order of application (each step says why it is there):

1. hard filters: excluded ids, seen / purchased items (configurable), out of stock, category
   include / exclude, price range, unscored (-inf) candidates;
2. boosts and buries: score multipliers, applied to scores shifted to be positive so a multiplier
   always moves an item the intended way, whatever the scale or sign of the model's scores;
3. diversity: MMR with an item-item similarity, and/or a cap of items per (primary) category;
4. exploration: a share of the slots goes to items from a given pool (new or trending), spread
   over the list at seeded positions, so a model does not only confirm what it already knows;
5. pins: items placed at fixed positions (they still obey the exclusions and the stock rule).

``candidate_filter`` turns the catalogue-wide rules into ``filter_items`` for ``recommend`` so
the model's top-N already has enough eligible items before re-ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

SimilarityFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Catalogue:
    """Per item column: stock, price (NaN unknown) and categories. Any may be None (unknown)."""

    in_stock: np.ndarray | None = None
    prices: np.ndarray | None = None
    categories: Sequence[Sequence[str]] | None = None

    def primary_category(self, item: int) -> str | None:
        if self.categories is None or not self.categories[item]:
            return None
        return self.categories[item][0]


@dataclass(frozen=True)
class Rules:
    """Merchandising rules of a placement (see the module docstring for the order)."""

    exclude_seen: bool = True
    exclude_purchased: bool = True
    in_stock_only: bool = False
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    exclude_ids: tuple[int, ...] = ()
    pins: Mapping[int, int] = field(default_factory=dict)  # item column -> 0-based position
    boosts: Mapping[int, float] = field(default_factory=dict)  # item column -> multiplier > 1
    buries: Mapping[int, float] = field(default_factory=dict)  # item column -> multiplier in (0, 1)
    category_cap: int | None = None
    mmr_lambda: float | None = None  # 1 = relevance only, 0 = diversity only
    exploration: float = 0.0  # share of the slots, 0..1

    def __post_init__(self) -> None:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"rules: min_price {self.min_price} is above max_price {self.max_price}")
        if self.category_cap is not None and self.category_cap < 1:
            raise ValueError(f"rules: category_cap must be >= 1, got {self.category_cap}")
        if self.mmr_lambda is not None and not 0 <= self.mmr_lambda <= 1:
            raise ValueError(f"rules: mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if not 0 <= self.exploration <= 1:
            raise ValueError(f"rules: exploration must be in [0, 1], got {self.exploration}")
        for item, position in self.pins.items():
            if position < 0:
                raise ValueError(f"rules: pin position of item {item} must be >= 0, got {position}")
        for name, table in (("boosts", self.boosts), ("buries", self.buries)):
            for item, factor in table.items():
                if factor <= 0:
                    raise ValueError(f"rules: {name} factor of item {item} must be > 0, got {factor}")


@dataclass(frozen=True)
class Ranked:
    """A re-ranked list: item columns, their (adjusted) scores, and where each came from:
    "model", "pinned" or "exploration"."""

    ids: np.ndarray
    scores: np.ndarray
    origins: tuple[str, ...]


def candidate_filter(n_items: int, rules: Rules, catalogue: Catalogue) -> np.ndarray:
    """Boolean mask of the items the catalogue-wide rules allow (stock, categories, price, ids)."""
    allowed = np.ones(n_items, dtype=bool)
    if rules.exclude_ids:
        allowed[np.asarray(rules.exclude_ids, dtype=np.int64)] = False
    if rules.in_stock_only and catalogue.in_stock is not None:
        allowed &= np.asarray(catalogue.in_stock, dtype=bool)
    if catalogue.prices is not None and (rules.min_price is not None or rules.max_price is not None):
        prices = np.asarray(catalogue.prices, dtype=np.float64)
        # An item without a price cannot be shown as inside a price range.
        known = ~np.isnan(prices)
        allowed &= known
        if rules.min_price is not None:
            allowed &= np.where(known, prices >= rules.min_price, False)
        if rules.max_price is not None:
            allowed &= np.where(known, prices <= rules.max_price, False)
    if catalogue.categories is not None and (rules.include_categories or rules.exclude_categories):
        include, exclude = set(rules.include_categories), set(rules.exclude_categories)
        for item, cats in enumerate(catalogue.categories):
            cats = set(cats)
            if (include and not cats & include) or cats & exclude:
                allowed[item] = False
    return allowed


def _available(n_items: int, rules: Rules, catalogue: Catalogue) -> np.ndarray:
    """What even a pin must obey: explicit exclusions and the stock rule."""
    ok = np.ones(n_items, dtype=bool)
    if rules.exclude_ids:
        ok[np.asarray(rules.exclude_ids, dtype=np.int64)] = False
    if rules.in_stock_only and catalogue.in_stock is not None:
        ok &= np.asarray(catalogue.in_stock, dtype=bool)
    return ok


def cosine_similarity_fn(item_vectors: np.ndarray | sparse.spmatrix) -> SimilarityFn:
    """Similarity of candidates from item vectors (features, TF-IDF, factors)."""
    unit = normalize(item_vectors)

    def similarity(ids: np.ndarray) -> np.ndarray:
        block = unit[ids]
        sims = block @ block.T
        return sims.toarray() if sparse.issparse(sims) else np.asarray(sims)

    return similarity


def matrix_similarity_fn(matrix: np.ndarray | sparse.spmatrix) -> SimilarityFn:
    """Similarity of candidates from an item-item matrix (e.g. item-kNN's), symmetrised."""

    def similarity(ids: np.ndarray) -> np.ndarray:
        block = matrix[ids][:, ids]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        return np.maximum(block, block.T)

    return similarity


def mmr(ids: np.ndarray, scores: np.ndarray, similarity: SimilarityFn, *, n: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance: greedily pick the item maximising
    lam * relevance - (1 - lam) * (max similarity to the items already picked). Relevance is the
    score rescaled to 0..1 within the candidates. Returns positions into ``ids``."""
    if len(ids) == 0 or n <= 0:
        return np.empty(0, dtype=np.int64)
    rel = np.asarray(scores, dtype=np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    sims = similarity(np.asarray(ids, dtype=np.int64))
    picked: list[int] = []
    max_sim = np.zeros(len(ids))
    free = np.ones(len(ids), dtype=bool)
    for _ in range(min(n, len(ids))):
        value = np.where(free, lam * rel - (1 - lam) * max_sim, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        free[best] = False
        max_sim = np.maximum(max_sim, sims[best])
    return np.asarray(picked, dtype=np.int64)


def cap_per_category(ids: np.ndarray, catalogue: Catalogue, *, cap: int, n: int) -> np.ndarray:
    """Positions into ``ids`` (kept in order) with at most ``cap`` items per primary category;
    items without a category are not capped."""
    counts: dict[str, int] = {}
    keep: list[int] = []
    for pos, item in enumerate(ids):
        category = catalogue.primary_category(int(item))
        if category is not None:
            if counts.get(category, 0) >= cap:
                continue
            counts[category] = counts.get(category, 0) + 1
        keep.append(pos)
        if len(keep) == n:
            break
    return np.asarray(keep, dtype=np.int64)


def rerank(
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    n: int,
    rules: Rules,
    catalogue: Catalogue,
    n_items: int,
    seen: Sequence[int] | np.ndarray = (),
    purchased: Sequence[int] | np.ndarray = (),
    similarity: SimilarityFn | None = None,
    exploration_pool: Sequence[int] | np.ndarray = (),
    seed: int = 0,
) -> Ranked:
    """Apply ``rules`` to one user's candidates (``ids`` with ``scores``, best first or not) and
    return the final list of at most ``n`` items. ``seed`` makes exploration reproducible (use a
    hash of user and day, so a visitor does not see the list reshuffle on every request)."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if ids.shape != scores.shape:
        raise ValueError(f"ids and scores must have the same shape, got {ids.shape} and {scores.shape}")
    if n <= 0:
        return Ranked(np.empty(0, dtype=np.int64), np.empty(0), ())

    # 1. hard filters
    allowed = candidate_filter(n_items, rules, catalogue)
    if rules.exclude_seen and len(seen):
        allowed[np.asarray(seen, dtype=np.int64)] = False
    if rules.exclude_purchased and len(purchased):
        allowed[np.asarray(purchased, dtype=np.int64)] = False
    valid = (ids >= 0) & np.isfinite(scores)
    keep = np.zeros(len(ids), dtype=bool)
    keep[valid] = allowed[ids[valid]]
    pinned = {int(i): int(p) for i, p in rules.pins.items() if 0 <= int(i) < n_items}
    keep &= ~np.isin(ids, list(pinned))  # pins are placed last, at their own positions
    ids, scores = ids[keep], scores[keep]
    _, first = np.unique(ids, return_index=True)  # a candidate list with repeats keeps the first
    order_first = np.sort(first)
    ids, scores = ids[order_first], scores[order_first]

    # 2. boosts and buries on positive-shifted scores
    if len(scores) and (rules.boosts or rules.buries):
        scores = scores - scores.min() + 1.0
        factors = np.ones(len(ids))
        for table in (rules.boosts, rules.buries):
            for item, factor in table.items():
                factors[ids == int(item)] *= float(factor)
        scores = scores * factors
    order = np.lexsort((ids, -scores))
    ids, scores = ids[order], scores[order]

    # 3. diversity
    n_explore = round(rules.exploration * n)
    n_model = n  # the list is cut to n after exploration and pins take their slots
    if rules.category_cap is not None:
        pos = cap_per_category(ids, catalogue, cap=rules.category_cap, n=len(ids))
        ids, scores = ids[pos], scores[pos]
    if rules.mmr_lambda is not None and similarity is not None and len(ids):
        pos = mmr(ids, scores, similarity, n=n_model, lam=rules.mmr_lambda)
        ids, scores = ids[pos], scores[pos]
    final_ids: list[int] = [int(i) for i in ids[:n_model]]
    final_scores: list[float] = [float(s) for s in scores[:n_model]]
    origins: list[str] = ["model"] * len(final_ids)

    # 4. exploration: seeded picks from the pool, at seeded positions in the list
    if n_explore and len(exploration_pool):
        rng = np.random.default_rng(seed)
        pool = np.asarray(exploration_pool, dtype=np.int64)
        pool = pool[(pool >= 0) & (pool < n_items)]
        taken = set(final_ids[: n - n_explore]) | set(pinned)
        pool = np.array([i for i in dict.fromkeys(pool.tolist()) if allowed[i] and i not in taken], dtype=np.int64)
        picks = rng.permutation(pool)[:n_explore] if len(pool) else np.empty(0, dtype=np.int64)
        if len(picks):
            # The model keeps the first slot; explored items land anywhere after it.
            head = [i for i in final_ids if i not in set(picks.tolist())][: n - len(picks)]
            head_scores = {i: s for i, s in zip(final_ids, final_scores, strict=True)}
            length = len(head) + len(picks)
            positions = np.arange(1, length) if head else np.arange(length)
            slots = rng.choice(positions, size=len(picks), replace=False)
            merged, merged_scores, merged_origins = [], [], []
            model_iter, explore_iter = iter(head), iter(picks.tolist())
            slot_set = {int(s) for s in slots}
            for position in range(length):
                if position in slot_set:
                    merged.append(next(explore_iter))
                    merged_scores.append(float("nan"))
                    merged_origins.append("exploration")
                else:
                    item = next(model_iter)
                    merged.append(item)
                    merged_scores.append(head_scores[item])
                    merged_origins.append("model")
            final_ids, final_scores, origins = merged, merged_scores, merged_origins

    # 5. pins at their positions (in position order; a position past the end appends)
    available = _available(n_items, rules, catalogue)
    for item, position in sorted(pinned.items(), key=lambda kv: (kv[1], kv[0])):
        if not available[item]:
            continue
        at = min(position, len(final_ids))
        final_ids.insert(at, item)
        final_scores.insert(at, float("nan"))
        origins.insert(at, "pinned")
    return Ranked(
        np.asarray(final_ids[:n], dtype=np.int64),
        np.asarray(final_scores[:n], dtype=np.float64),
        tuple(origins[:n]),
    )

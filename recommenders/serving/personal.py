"""Candidates for a visitor the models can say something about, in the order of the cold-start
ladder: enough interactions -> the live model (its precomputed list, or recomputed on read when the
visitor has newer events than the list); a few -> item-to-item from the latest session; stated
preferences only -> content-based. Each candidate carries the algorithm that produced it and the
item of the visitor's history that explains it ("because you viewed X").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from scipy import sparse

from personalization.hot_redis import cache_backend, near_keep, near_mget, redis_client
from recommenders import cache_keys, store
from recommenders.algorithms import topn
from recommenders.algorithms.base import UserContext
from recommenders.registry import LoadedModel
from recommenders.serving.cache import CACHE_ERRORS
from recommenders.serving.visitors import History, near_prefixes

logger = logging.getLogger(__name__)

# How many of the visitor's latest items explain a list ("because you viewed X").
ANCHORS = topn.REASON_ANCHORS
# Recency discount between consecutive session items when they vote for similar items.
SESSION_DECAY = 0.8


@dataclass
class Candidate:
    item: str
    score: float
    algorithm: str
    reason: str = ""
    anchor: str = ""  # history item that explains it; the reason is written once titles are known
    verb: str = ""


@dataclass
class Personal:
    candidates: list[Candidate]
    strategy: str  # cached | recomputed | session | preferences | "" (nothing personal to say)


def _known(loaded: LoadedModel, items) -> list[int]:
    index = loaded.item_index
    return [index[i] for i in items if i in index]


def training_row(loaded: LoadedModel, profile_id: int) -> sparse.csr_matrix | None:
    row = loaded.user_index.get(int(profile_id))
    return None if row is None else loaded.user_items[row]


def training_cells(loaded: LoadedModel, profile_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(columns, weights) of the visitor's training row, read straight from the CSR arrays: slicing
    a row out of a scipy matrix costs tens of microseconds of checks, on every cached answer."""
    row = loaded.user_index.get(int(profile_id))
    if row is None:
        return None
    X = loaded.user_items
    start, end = X.indptr[row], X.indptr[row + 1]
    return X.indices[start:end], X.data[start:end]


@dataclass(frozen=True)
class Cutoff:
    """What a model or list already reflects: events that happened up to `through` and arrived by
    `received` (unix times; None: no bound). Anything else is news to it."""

    through: float | None
    received: float | None

    def is_new(self, at, received_at) -> bool:
        if self.through is not None and at.timestamp() > self.through:
            return True
        return self.received is not None and received_at.timestamp() > self.received


def model_cutoff(loaded: LoadedModel) -> Cutoff:
    """A model knows the events up to the last one it was trained through that had arrived when
    it was published (an old event arriving later is news to it)."""
    through = loaded.trained_through.timestamp() if loaded.trained_through else None
    received = loaded.published_at.timestamp() if loaded.published_at else None
    return Cutoff(through, received)


def list_cutoff(loaded: LoadedModel, toplist: store.TopList) -> Cutoff:
    """A list recomputed on read (after the version was published) knows every event that had
    arrived when it was computed; a published list knows what its model knows."""
    published = loaded.published_at.timestamp() if loaded.published_at else None
    if published is not None and toplist.computed_at > published:
        return Cutoff(None, toplist.computed_at)
    return model_cutoff(loaded)


def has_news(history: History, cutoff: Cutoff) -> bool:
    if any(cutoff.is_new(i.at, i.received_at) for i in history.interactions):
        return True
    return any(cutoff.is_new(at, at) for at in history.thumbs_up.values())


def fresh_row(loaded: LoadedModel, profile_id: int, history: History) -> sparse.csr_matrix:
    """The visitor's row now: the training row plus the interactions and thumbs-up the model has
    not seen, in the model's columns (items the model never saw cannot be scored by it)."""
    n_items = len(loaded.item_ids)
    cutoff = model_cutoff(loaded)
    cells: dict[int, float] = {}
    base = training_cells(loaded, profile_id)
    if base is not None:
        for col, weight in zip(base[0].tolist(), base[1].tolist(), strict=True):
            cells[col] = weight
    for interaction in history.interactions:
        if base is not None and not cutoff.is_new(interaction.at, interaction.received_at):
            continue
        col = loaded.item_index.get(interaction.item)
        if col is not None:
            cells[col] = cells.get(col, 0.0) + interaction.weight
    for item, at in history.thumbs_up.items():
        col = loaded.item_index.get(item)
        if col is not None and (base is None or cutoff.is_new(at, at)):
            cells[col] = max(cells.get(col, 0.0), 1.0)
    cols = np.fromiter(cells, dtype=np.int64, count=len(cells))
    data = np.fromiter(cells.values(), dtype=np.float32, count=len(cells))
    return sparse.csr_matrix((data, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, n_items))


def _toplist(loaded: LoadedModel, profile_id: int) -> store.TopList | None:
    try:
        return store.toplist_get(config_key=loaded.config_key, version=loaded.version, profile_id=profile_id)
    except CACHE_ERRORS:
        logger.warning("precomputed list of profile %s unreadable: recomputing from the model", profile_id)
        return None


def _recache(
    loaded: LoadedModel,
    profile_id: int,
    ids,
    scores,
    *,
    computed_at: float,
    ttl: int = cache_keys.RECOMPUTED_TTL,
    because: list[tuple[str, str]] | None = None,
) -> None:
    """Cache a list as knowing every event that arrived before `computed_at` (the time the
    visitor's history was read, so an event arriving meanwhile still makes it stale), with its
    reasons (`because`: (anchor id, verb) per item) when known."""
    try:
        store.toplist_set(
            config_key=loaded.config_key,
            version=loaded.version,
            profile_id=profile_id,
            item_ids=list(ids),
            scores=np.asarray(scores, dtype=np.float32),
            computed_at=computed_at,
            ttl=ttl,
            because=because,
        )
    except CACHE_ERRORS:
        logger.warning("recomputed list of profile %s not cached (cache unreachable)", profile_id)


def explain(
    loaded: LoadedModel,
    candidates: list[Candidate],
    history: History | None,
    anchors: list[tuple[int, str]] | None = None,
    recommender=None,
) -> None:
    """Point each candidate at the item of the visitor's history most similar to it: their
    latest items (`history`), or given (column, verb) anchors. Similar by `recommender` (default:
    the live model)."""
    recommender = recommender if recommender is not None else loaded.recommender
    if not candidates or not recommender.has_similar_items:
        return
    if anchors is None:
        anchors = [
            (loaded.item_index[i], history.anchor_verb(i))
            for i in (history.positive_items[:ANCHORS] if history is not None else [])
            if i in loaded.item_index
        ]
    if not anchors:
        return
    wanted = {loaded.item_index[c.item]: c for c in candidates if c.item in loaded.item_index and not c.anchor}
    if not wanted:
        return
    cols = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
    anchor_cols = np.asarray([col for col, _ in anchors], dtype=np.int64)
    # Similarity of each anchor to each candidate only (a top-k over the whole catalogue per anchor
    # cost more than the rest of a cached answer).
    best = topn.best_anchors(recommender, anchor_cols, cols)
    for col, a in zip(cols.tolist(), best.tolist(), strict=True):
        if a >= 0:
            wanted[col].anchor = str(loaded.item_ids[anchors[a][0]])
            wanted[col].verb = anchors[a][1]


def explain_cached(loaded: LoadedModel, candidates: list[Candidate], profile_id: int) -> None:
    """`explain` from the visitor's training row, for a cached list stored without its reasons
    (published before lists carried them: `store.TopList.slots` is None)."""
    explain(loaded, candidates, None, anchors=training_anchors(loaded, profile_id))


def toplist_and_stamp(
    loaded: LoadedModel, profile_id: int, prefetched: tuple | None = None
) -> tuple[store.TopList | None, object]:
    """The visitor's precomputed list and their profile's change stamp (see
    `visitors.visitors_changed`) in one round trip, or none while the process's near cache holds
    both unchanged: the hot path confirms a cached visitor with it."""
    from recommenders.serving.visitors import UNREADABLE, visitor_stamp_key

    key, stamp_key = cache_keys.toplist(loaded.config_key, loaded.version, profile_id), visitor_stamp_key(profile_id)
    make_key = cache_backend().make_key
    full_key, full_stamp_key = make_key(key), make_key(stamp_key)
    if prefetched is not None and prefetched[0] == cache_keys.toplist_prefix(loaded.config_key, loaded.version):
        _, raw, stamp, mark = prefetched  # read with the visitor, in the same round trip
        fields = _near_decode(full_key, raw)
        if mark is not None and stamp is not UNREADABLE:  # the visitor's next page view needs no round trip
            near_keep(mark, [full_key, full_stamp_key], [fields, stamp])
        return _toplist_of(fields), stamp
    client = redis_client()
    try:
        if client is None:
            found = cache.get_many([key, stamp_key])
            return store._decode(found.get(key)), found.get(stamp_key)
        fields, stamp = near_mget(client, [full_key, full_stamp_key], prefixes=near_prefixes(), decode=_near_decode)
    except CACHE_ERRORS:
        logger.warning("cache unreachable reading the list of profile %s: recomputing from the model", profile_id)
        return None, UNREADABLE
    return _toplist_of(fields), stamp


def _near_decode(key: str, raw):
    """A list (as `store.toplist_fields`, a plain tuple) or a change stamp as read (see
    `toplist_and_stamp`), decoded once for the near cache."""
    if raw is None:
        return None
    value = cache_backend().client.decode(raw)
    return store.toplist_fields(value) if key.startswith(near_prefixes()[0]) else value


def _toplist_of(fields: tuple | None) -> store.TopList | None:
    return None if fields is None else store.TopList(*fields)


_UNREAD = object()


def fresh_toplist(loaded: LoadedModel, profile, toplist=_UNREAD) -> store.TopList | None:
    """The visitor's cached list if nothing they did can be newer than it, judged without reading
    their events: their latest event time (`last_seen_at`, kept with every event) is not after
    what the list reflects. Otherwise None, and the caller takes the full path, which reads the
    events and decides precisely (an event about no item does not make a list stale).
    `toplist`: the list when the caller has read it already."""
    if toplist is _UNREAD:
        toplist = _toplist(loaded, profile.pk)
    if toplist is None:
        return None
    cutoff = list_cutoff(loaded, toplist)
    bound = cutoff.through if cutoff.through is not None else cutoff.received
    if bound is None or profile.last_seen_at.timestamp() > bound:
        return None
    return toplist


def training_anchors(loaded: LoadedModel, profile_id: int) -> list[tuple[int, str]]:
    """The visitor's strongest items in the training row (decayed weights favour recent ones),
    to explain a cached list without reading their events: what a publish explains lists with."""
    row = loaded.user_index.get(int(profile_id))
    if row is None:
        return []
    cols = topn.training_anchors(loaded.user_items[row : row + 1], ANCHORS)[0]
    return [(col, "viewed") for col in cols[cols >= 0].tolist()]


def model_candidates(
    loaded: LoadedModel,
    *,
    profile_id: int,
    history: History,
    depth: int,
    allowed: np.ndarray | None,
    blocked: np.ndarray | None,
    context: UserContext | None = None,
    published_n: int = 0,
) -> tuple[list[Candidate], str]:
    """The live model's list: the precomputed one while it is fresh and no filter restricts the
    columns, else scored now from the visitor's fresh row (and re-cached when unrestricted).
    `context` (recent items, stated preferences) is what a hybrid's ladder reads. A precomputed
    list shorter than `published_n` (the configuration's top-N) is all the model had to offer:
    recomputing could not make it longer. Each candidate comes explained from the visitor's latest
    items ("because you viewed X")."""
    toplist = _toplist(loaded, profile_id)
    algorithm = loaded.algorithm
    if toplist is not None and allowed is None and not has_news(history, list_cutoff(loaded, toplist)):
        blocked_ids = {str(loaded.item_ids[c]) for c in (blocked if blocked is not None else [])}
        found = [
            Candidate(item, score, algorithm)
            for item, score in zip(toplist.item_ids, toplist.scores, strict=True)
            if item not in blocked_ids
        ]
        if len(found) >= depth or len(toplist.item_ids) < published_n:
            if history.read_at > toplist.computed_at:
                # Confirmed current by reading their events (they did things, none about items): cache
                # it as such, so their next requests take the path that does not read events.
                _recache(
                    loaded,
                    profile_id,
                    toplist.item_ids,
                    toplist.scores,
                    computed_at=history.read_at,
                    ttl=cache_keys.TOPLIST_TTL,
                    because=toplist.reasons(),
                )
            found = found[:depth]
            explain(loaded, found, history)
            return found, "cached"
    row = fresh_row(loaded, profile_id, history)
    if not row.nnz and context is None:
        return [], ""
    n = max(depth, settings.RECOMMENDERS_SERVE_RECOMPUTE_N) + (len(blocked) if blocked is not None else 0)
    ids, scores = loaded.recommender.recommend_fresh(row, N=n, items=allowed, context=context)
    keep = np.isfinite(scores)
    ids, scores = ids[keep], scores[keep]
    external = [str(x) for x in loaded.item_ids[ids].tolist()]
    listed = [Candidate(item, float(score), algorithm) for item, score in zip(external, scores.tolist(), strict=True)]
    explain(loaded, listed, history)
    if allowed is None and row.nnz:
        # The visitor's whole list, kept for their next page view with its reasons (from their
        # latest items). Their thumbs-down are left out of it (giving feedback drops the cached
        # list), so the cache-only path needs no feedback read.
        kept = [c for c in listed if c.item not in history.thumbs_down]
        _recache(
            loaded,
            profile_id,
            [c.item for c in kept],
            [c.score for c in kept],
            computed_at=history.read_at or time.time(),
            because=[(c.anchor, c.verb) for c in kept],
        )
    blocked_ids = {str(loaded.item_ids[c]) for c in (blocked if blocked is not None else [])}
    found = [c for c in listed if c.item not in blocked_ids]
    return found[:depth], "recomputed"


def explain_blend(
    loaded: LoadedModel, found: list[Candidate], row: sparse.csr_matrix, history: History, context: UserContext | None
) -> None:
    """A blend (the hybrid) says itself which member produced each item and which of the
    visitor's items it follows from."""
    explainer = getattr(loaded.recommender, "explain", None)
    if explainer is None or not found:
        return
    cols = np.asarray([[loaded.item_index[c.item] for c in found]], dtype=np.int64)
    try:
        source, because = explainer(np.array([-1]), row, cols, context=context)
    except Exception:  # an explanation is a courtesy: never fail the list for it
        logger.warning("%s could not explain its list", loaded.algorithm, exc_info=True)
        return
    for candidate, name, anchor_col in zip(found, source[0].tolist(), because[0].tolist(), strict=True):
        if name:
            candidate.algorithm = str(name)
        if anchor_col >= 0:
            candidate.anchor = str(loaded.item_ids[anchor_col])
            candidate.verb = history.anchor_verb(candidate.anchor)


def session_candidates(
    loaded: LoadedModel, *, history: History, depth: int, allowed: np.ndarray | None, blocked: set[int]
) -> list[Candidate]:
    """Item-to-item from the latest session: each session item (newest weighs most) votes for the
    items most similar to it; an item keeps its best vote and the session item that cast it."""
    anchors = _known(loaded, history.session_items[:ANCHORS]) or _known(loaded, history.positive_items[:ANCHORS])
    if not anchors:
        return []
    anchor_array = np.asarray(anchors, dtype=np.int64)
    if loaded.recommender.has_similar_items:
        ids, sims = loaded.recommender.similar_items(anchor_array, N=depth + len(blocked) + len(anchors), items=allowed)
        algorithm = "item_to_item"
    else:
        ids, sims = _cooccurrence(loaded, anchor_array, depth + len(blocked) + len(anchors), allowed)
        algorithm = "item_to_item"
    seen = set(anchors) | blocked | set(_known(loaded, history.positive_items))
    best: dict[int, tuple[float, int]] = {}
    for a, anchor_col in enumerate(anchors):
        weight = SESSION_DECAY**a
        for col, sim in zip(ids[a].tolist(), sims[a].tolist(), strict=True):
            if col < 0 or col in seen or not np.isfinite(sim) or sim <= 0:
                continue
            if weight * sim > best.get(col, (0.0, -1))[0]:
                best[col] = (weight * sim, anchor_col)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:depth]
    out = []
    for col, (score, anchor_col) in ranked:
        anchor = str(loaded.item_ids[anchor_col])
        out.append(
            Candidate(str(loaded.item_ids[col]), score, algorithm, anchor=anchor, verb=history.anchor_verb(anchor))
        )
    return out


_cooc: dict[tuple[str, int], sparse.csr_matrix] = {}


def _cooccurrence(
    loaded: LoadedModel, anchors: np.ndarray, n: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine between item columns of the training matrix (positive cells), for models that have
    no item similarity of their own (e.g. popularity)."""
    key = (loaded.config_key, loaded.version)
    X = _cooc.get(key)
    if X is None:
        X = loaded.user_items.copy().tocsc().astype(np.float32)
        X.data = (X.data > 0).astype(np.float32)
        X.eliminate_zeros()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        X = sparse.csr_matrix(X @ sparse.diags(1.0 / norms))
        _cooc.clear()
        _cooc[key] = X
    sims = np.asarray((X[:, anchors].T @ X).todense(), dtype=np.float32)
    sims[np.arange(len(anchors)), anchors] = -np.inf
    if allowed is not None:
        mask = np.ones(sims.shape[1], dtype=bool)
        mask[allowed] = False
        sims[:, mask] = -np.inf
    from recommenders.algorithms.base import topk

    return topk(sims, n)


def preference_candidates(
    loaded: LoadedModel | None, *, categories: tuple[str, ...], tags: tuple[str, ...], depth: int
) -> list[Candidate]:
    """Content-based from stated preferences: items sharing the stated categories (twice the
    weight) and tags, most popular first among equals. Works on the model's item features, or on
    the catalogue when no model is live."""
    wanted_c, wanted_t = set(categories), set(tags)
    if not wanted_c and not wanted_t:
        return []
    scored: list[tuple[float, str, str]] = []
    if loaded is not None and loaded.item_features is not None:
        features = loaded.item_features
        popularity = model_popularity(loaded)
        peak = float(popularity.max()) if len(popularity) and popularity.max() > 0 else 1.0
        item_tags = features.tags if features.tags is not None else [()] * features.n_items
        for col in range(features.n_items):
            cats = {str(c).lower() for c in features.categories[col]}
            tg = {str(t).lower() for t in item_tags[col]}
            match = 2.0 * len(cats & wanted_c) + len(tg & wanted_t)
            if match:
                why = next(iter(sorted(cats & wanted_c)), "") or next(iter(sorted(tg & wanted_t)), "")
                scored.append((match + 0.5 * float(popularity[col]) / peak, str(loaded.item_ids[col]), why))
    else:
        from recommenders.models import Item

        for external_id, item_categories, item_tags in Item.objects.filter(in_stock=True).values_list(
            "external_id", "categories", "tags"
        )[: settings.RECOMMENDERS_SERVE_CONTENT_SCAN]:
            cats = {str(c).lower() for c in item_categories or []}
            tg = {str(t).lower() for t in item_tags or []}
            match = 2.0 * len(cats & wanted_c) + len(tg & wanted_t)
            if match:
                why = next(iter(sorted(cats & wanted_c)), "") or next(iter(sorted(tg & wanted_t)), "")
                scored.append((match, external_id, why))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [
        Candidate(item, score, "content", reason=f"matches your interest in {why}")
        for score, item, why in scored[:depth]
    ]


_popularity: dict[tuple[str, int], np.ndarray] = {}


def model_popularity(loaded: LoadedModel) -> np.ndarray:
    """Visitors with a positive interaction per item column in the model's training matrix."""
    key = (loaded.config_key, loaded.version)
    found = _popularity.get(key)
    if found is None:
        X = loaded.user_items
        found = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float32)
        _popularity.clear()
        _popularity[key] = found
    return found


def popular_candidates(loaded: LoadedModel, *, depth: int) -> list[Candidate]:
    popularity = model_popularity(loaded)
    order = np.argsort(-popularity, kind="stable")[:depth]
    return [
        Candidate(str(loaded.item_ids[col]), float(popularity[col]), "popularity", reason="popular with other visitors")
        for col in order.tolist()
        if popularity[col] > 0
    ]

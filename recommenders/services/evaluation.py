"""Offline evaluation of a training: the time-based holdout split, item features for content
algorithms and diversity, and metrics of the model, the popularity baseline and the live version
on the same held-out interactions (so the promotion gate compares like with like)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection
from scipy import sparse

from recommenders.algorithms import metrics
from recommenders.algorithms.base import ItemFeatures, Recommender, as_user_items
from recommenders.algorithms.registry import build
from recommenders.algorithms.topn import recommend_many
from recommenders.models import Item
from recommenders.services.matrix import Interactions

logger = logging.getLogger(__name__)

DEFAULT_K = 10
SEED = 42


@dataclass
class Split:
    train: sparse.csr_matrix
    test: sparse.csr_matrix
    users: np.ndarray  # rows evaluated: sampled users with a held-out item


def metric_k(metric: str) -> int:
    """K of a metric name like "ndcg@10" (10 when the metric has none, e.g. "coverage")."""
    match = re.fullmatch(r"[a-z_]+@(\d{1,3})", metric.strip().lower())
    return int(match.group(1)) if match else DEFAULT_K


def holdout_split(interactions: Interactions, *, max_users: int | None = None, seed: int = SEED) -> Split:
    """Each sampled user's most recent positive interaction goes to test; everything else (other
    users, negative signals) stays in train. Users with a single positive item are never sampled:
    nothing would be left to learn them from."""
    max_users = settings.RECOMMENDERS_EVAL_USERS if max_users is None else max_users
    n_users, n_items = interactions.shape
    rows, cols, weights, ts = interactions.rows, interactions.cols, interactions.weights, interactions.timestamps
    positive = weights > 0
    per_user = np.bincount(rows[positive], minlength=n_users)
    eligible = np.flatnonzero(per_user > 1)
    if len(eligible) > max_users:
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, size=max_users, replace=False))
    sampled = np.zeros(n_users, dtype=bool)
    sampled[eligible] = True
    chosen = sampled[rows] & positive
    train_sampled, test = metrics.split_time_holdout(
        rows[chosen], cols[chosen], ts[chosen], n_last=1, weights=weights[chosen], shape=(n_users, n_items)
    )
    rest = ~chosen
    train_rest = sparse.csr_matrix(
        (weights[rest].astype(np.float32), (rows[rest], cols[rest])), shape=(n_users, n_items)
    )
    train = (train_sampled + train_rest).tocsr()
    train.sum_duplicates()
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    return Split(train=train, test=test, users=users)


def item_features(item_ids: np.ndarray) -> ItemFeatures:
    """Content of the matrix's columns from the catalogue (stubs and unknown ids: empty)."""
    ids = [str(i) for i in item_ids.tolist()]
    known = _catalogue_rows(ids)
    texts, categories, tags, coords = [], [], [], []
    for external_id in ids:
        title, description, cats, item_tags, lat, lon = known.get(external_id, ("", "", [], [], None, None))
        cats = [str(c) for c in cats] if isinstance(cats, list) else []
        item_tags = [str(t) for t in item_tags] if isinstance(item_tags, list) else []
        texts.append(" ".join(part for part in (title, description, " ".join(item_tags)) if part))
        categories.append(cats)
        tags.append(item_tags)
        coords.append((np.nan, np.nan) if lat is None or lon is None else (lat, lon))
    coordinates = np.asarray(coords, dtype=np.float64).reshape(len(ids), 2)
    return ItemFeatures(
        texts=texts,
        categories=categories,
        tags=tags,
        coordinates=coordinates if not np.isnan(coordinates).all() else None,
    )


def _catalogue_rows(ids: list[str]) -> dict[str, tuple]:
    """external id -> (title, description, categories, tags, latitude, longitude) of the items."""
    fields = ("external_id", "title", "description", "categories", "tags", "latitude", "longitude")
    if connection.vendor != "postgresql":
        known: dict[str, tuple] = {}
        for start in range(0, len(ids), 5000):
            for row in Item.objects.filter(external_id__in=ids[start : start + 5000]).values_list(*fields):
                known[row[0]] = row[1:]
        return known
    # One array parameter, and the JSON lists as text decoded here: the ORM's per-value parameter
    # and converter machinery costs more than the query for a catalogue of tens of thousands.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, title, description, categories::text, tags::text, latitude, longitude "
            f"FROM {Item._meta.db_table} WHERE external_id = ANY(%s)",
            [ids],
        )
        return {
            external_id: (title, description, _json(categories), _json(tags), lat, lon)
            for external_id, title, description, categories, tags, lat, lon in cursor.fetchall()
        }


def _json(text: str):
    return [] if text == "[]" else json.loads(text)


def category_vectors(features: ItemFeatures) -> sparse.csr_matrix | None:
    """One-hot categories and tags per item, the space intra-list diversity is measured in."""
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for i, (cats, tags) in enumerate(zip(features.categories, features.tags or [[]] * features.n_items, strict=True)):
        for name in {*(f"c:{c}" for c in cats), *(f"t:{t}" for t in tags)}:
            rows.append(i)
            cols.append(vocabulary.setdefault(name, len(vocabulary)))
    if not vocabulary:
        return None
    return sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(features.n_items, len(vocabulary))
    )


def evaluate_model(
    model: Recommender, split: Split, *, k: int, item_vectors: sparse.csr_matrix | None
) -> dict[str, float]:
    """`metrics.evaluate` of the model on the split's users, its lists picked by `recommend_many`."""
    if not len(split.users):
        return {}
    train, users = as_user_items(split.train), split.users
    ids, _ = recommend_many(model, users, train[users], k)
    return _scored(ids, split, k=k, item_vectors=item_vectors)


def _scored(ids: np.ndarray, split: Split, *, k: int, item_vectors: sparse.csr_matrix | None) -> dict[str, float]:
    result = metrics.ranking_metrics(ids, as_user_items(split.test)[split.users], k)
    result["coverage"] = metrics.catalogue_coverage(ids, split.train.shape[1])
    if item_vectors is not None:
        result["diversity"] = metrics.intra_list_diversity(ids, item_vectors)
    result["users"] = len(split.users)
    return {name: round(float(value), 6) for name, value in result.items()}


def evaluate_popularity(split: Split, *, k: int, item_vectors: sparse.csr_matrix | None) -> dict[str, float]:
    baseline = build("popularity").fit(split.train)
    return evaluate_model(baseline, split, k=k, item_vectors=item_vectors)


def evaluate_other(
    model: Recommender,
    *,
    model_item_ids: np.ndarray,
    split: Split,
    item_ids: np.ndarray,
    k: int,
    item_vectors: sparse.csr_matrix | None,
) -> dict[str, float]:
    """Metrics of another version (trained on an older matrix, with its own columns) on this split:
    the test users' train rows are mapped into its columns, their state recomputed from them, and
    its recommendations mapped back. Items it never saw simply cannot be recommended by it."""
    if not len(split.users):
        return {}
    theirs = {str(external_id): i for i, external_id in enumerate(model_item_ids.tolist())}
    to_theirs = np.asarray([theirs.get(str(external_id), -1) for external_id in item_ids.tolist()], dtype=np.int64)
    from_theirs = np.full(len(model_item_ids), -1, dtype=np.int64)
    known = to_theirs >= 0
    from_theirs[to_theirs[known]] = np.flatnonzero(known)
    rows = split.train[split.users].tocoo()
    keep = to_theirs[rows.col] >= 0
    mapped = sparse.csr_matrix(
        (rows.data[keep], (rows.row[keep], to_theirs[rows.col[keep]])), shape=(len(split.users), len(model_item_ids))
    )
    ids, _ = recommend_many(model, np.full(len(split.users), -1, dtype=np.int64), mapped, k, recalculate_user=True)
    ours = np.where(ids >= 0, from_theirs[np.maximum(ids, 0)], -1)
    return _scored(ours, split, k=k, item_vectors=item_vectors)

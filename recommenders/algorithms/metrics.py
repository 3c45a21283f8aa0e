"""Offline evaluation: train/test splits and top-K ranking metrics, batched over users.

Relevance is binary (an item in the user's test set is relevant). Definitions, per user, averaged
over the users that have at least one test item:

- Precision@K = hits in the top K / K
- Recall@K    = hits in the top K / |test|
- MAP@K       = sum over hit ranks r of Precision@r / min(|test|, K)
- NDCG@K      = sum over hit ranks r (1-based) of 1/log2(r + 1) / the same sum for an ideal list of
                min(|test|, K) hits
- coverage    = distinct items recommended to anyone / catalogue size
- diversity   = mean over lists of the mean pairwise (1 - cosine similarity) of its items
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

from recommenders.algorithms.base import UserContext, as_user_items

if TYPE_CHECKING:
    from recommenders.algorithms.base import Recommender


# -- splits ------------------------------------------------------------------------------------
def split_random_per_user(
    matrix: sparse.csr_matrix, fraction: float = 0.2, seed: int = 42
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Per user, round(fraction * n_u) of their items (chosen at random) go to test, the rest to
    train. Seeded: the same matrix and seed give the same split."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    X = as_user_items(matrix)
    rng = np.random.default_rng(seed)
    counts = np.diff(X.indptr)
    row_of = np.repeat(np.arange(X.shape[0]), counts)
    # Random rank of each interaction within its row: sort by (row, random key).
    order = np.lexsort((rng.random(X.nnz), row_of))
    rank = np.empty(X.nnz, dtype=np.int64)
    rank[order] = np.arange(X.nnz) - X.indptr[row_of[order]]
    n_test = np.floor(fraction * counts + 0.5).astype(np.int64)  # round half up, unlike np.round
    is_test = rank < n_test[row_of]
    return _pick(X, ~is_test), _pick(X, is_test)


def split_time_holdout(
    rows: np.ndarray,
    cols: np.ndarray,
    timestamps: np.ndarray,
    n_last: int = 1,
    *,
    weights: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Time-based holdout from interaction triples: each user's ``n_last`` most recently touched
    items go to test (binary), everything else to train (summed weights).

    A cell's time is its latest interaction, and a test item's earlier interactions leave train
    too (otherwise it would be filtered as already seen). Users with n_last or fewer items keep
    them all in train: there would be nothing left to learn them from.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if not (len(rows) == len(cols) == len(timestamps)):
        raise ValueError("rows, cols and timestamps must have the same length")
    if n_last < 1:
        raise ValueError(f"n_last must be >= 1, got {n_last}")
    weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    if shape is None:
        shape = (int(rows.max()) + 1 if len(rows) else 0, int(cols.max()) + 1 if len(cols) else 0)
    n_items = shape[1]
    cell = rows * n_items + cols
    uniq, inverse = np.unique(cell, return_inverse=True)
    latest = np.full(len(uniq), -np.inf)
    np.maximum.at(latest, inverse, timestamps)
    cell_rows = uniq // n_items
    # Rank cells within their user by time, newest first (ties: higher column first, deterministic).
    order = np.lexsort((-(uniq % n_items), -latest, cell_rows))
    sorted_rows = cell_rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq)) - starts
    per_user = np.bincount(cell_rows, minlength=shape[0])
    cell_test = (rank < n_last) & (per_user[cell_rows] > n_last)
    event_test = cell_test[inverse]
    train = sparse.csr_matrix(
        (weights[~event_test], (rows[~event_test], cols[~event_test])), shape=shape, dtype=np.float32
    )
    test_cells = uniq[cell_test]
    test = sparse.csr_matrix(
        (np.ones(len(test_cells), dtype=np.float32), (test_cells // n_items, test_cells % n_items)), shape=shape
    )
    return as_user_items(train), as_user_items(test)


def _pick(X: sparse.csr_matrix, keep: np.ndarray) -> sparse.csr_matrix:
    coo = X.tocoo()
    return as_user_items(sparse.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=X.shape))


# -- metrics -----------------------------------------------------------------------------------
def hit_matrix(recommended: np.ndarray, test_rows: sparse.csr_matrix) -> np.ndarray:
    """Boolean (n_users, K): is recommended[u, r] in user u's test row? Vectorised via cell codes."""
    n_users = recommended.shape[0]
    n_items = test_rows.shape[1]
    test = as_user_items(test_rows)
    test_codes = np.repeat(np.arange(n_users), np.diff(test.indptr)) * n_items + test.indices
    rec_codes = np.arange(n_users)[:, None] * n_items + recommended
    hits = np.isin(rec_codes, test_codes)
    return hits & (recommended >= 0)


def ranking_metrics(recommended: np.ndarray, test_rows: sparse.csr_matrix, k: int) -> dict[str, float]:
    """Precision, recall, MAP and NDCG at k, averaged over the rows with at least one test item."""
    recommended = np.asarray(recommended)[:, :k]
    if recommended.shape[1] < k:  # fewer candidates than k: pad as misses
        pad = np.full((recommended.shape[0], k - recommended.shape[1]), -1)
        recommended = np.hstack([recommended, pad])
    n_relevant = np.diff(as_user_items(test_rows).indptr)
    users = n_relevant > 0
    hits = hit_matrix(recommended, test_rows)[users].astype(np.float64)
    n_relevant = n_relevant[users]
    if not len(n_relevant):
        return {f"{m}@{k}": 0.0 for m in ("precision", "recall", "map", "ndcg")}
    ranks = np.arange(1, k + 1)
    discounts = 1.0 / np.log2(ranks + 1)
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    precision_at = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at * hits).sum(axis=1) / np.minimum(n_relevant, k)
    return {
        f"precision@{k}": float(hits.sum(axis=1).mean() / k),
        f"recall@{k}": float((hits.sum(axis=1) / n_relevant).mean()),
        f"map@{k}": float(ap.mean()),
        f"ndcg@{k}": float((dcg / ideal).mean()),
    }


def catalogue_coverage(recommended: np.ndarray, n_items: int) -> float:
    ids = np.asarray(recommended).ravel()
    ids = ids[ids >= 0]
    return float(len(np.unique(ids)) / n_items) if n_items else 0.0


def intra_list_diversity(recommended: np.ndarray, item_vectors: Any) -> float:
    """Mean over lists of the mean pairwise cosine distance between its items. ``item_vectors``:
    dense or sparse (n_items, d) (features, TF-IDF, factors). Lists shorter than 2 are skipped."""
    recommended = np.asarray(recommended)
    unit = normalize(item_vectors if sparse.issparse(item_vectors) else np.asarray(item_vectors, dtype=np.float64))
    total, lists = 0.0, 0
    for start in range(0, len(recommended), 1024):  # blocks of lists, bounded memory
        block = recommended[start : start + 1024]
        valid = block >= 0
        n = valid.sum(axis=1)
        ok = n >= 2
        if not ok.any():
            continue
        flat = np.where(valid, block, 0).ravel()
        vecs = unit[flat]
        vecs = vecs.toarray() if sparse.issparse(vecs) else vecs
        vecs = vecs.reshape(block.shape[0], block.shape[1], -1) * valid[..., None]
        # Sum of pairwise similarities from |sum of vectors|^2 = n + 2 * sum over pairs.
        summed = vecs.sum(axis=1)
        pair_sim = ((summed * summed).sum(axis=1) - (vecs * vecs).sum(axis=(1, 2))) / 2
        pairs = n * (n - 1) / 2
        total += float((1.0 - pair_sim[ok] / pairs[ok]).sum())
        lists += int(ok.sum())
    return total / lists if lists else 0.0


def evaluate(
    model: Recommender,
    train: sparse.csr_matrix,
    test: sparse.csr_matrix,
    k: int = 10,
    users: np.ndarray | None = None,
    *,
    item_vectors: Any = None,
    context: UserContext | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` (fitted on ``train``) on ``test``: all items the user has not seen in
    train are ranked. ``users`` defaults to every user with a test item. ``context`` is aligned
    with ``users`` when given."""
    train = as_user_items(train)
    test = as_user_items(test)
    if users is None:
        users = np.flatnonzero(np.diff(test.indptr) > 0)
    users = np.asarray(users, dtype=np.int64)
    ids, _ = model.recommend(users, train[users], N=k, context=context)
    result = ranking_metrics(ids, test[users], k)
    result["coverage"] = catalogue_coverage(ids, train.shape[1])
    if item_vectors is not None:
        result["diversity"] = intra_list_diversity(ids, item_vectors)
    result["users"] = len(users)
    return result

"""Top-N of many users at once, for the batch paths (offline evaluation, publishing lists).

``recommend_many(model, userids, user_items, N)`` gives what ``model.recommend(userids, user_items,
N)`` gives (already-liked items left out, ids best first padded with -1 / -inf), but picks each
row's top N without a full ``argpartition`` of the row, which costs more than scoring it: each
row's item scores are folded into ``8 N`` interleaved groups and the N-th largest group maximum is
a lower bound of the row's N-th largest score (the N best groups each hold a score at least that
high), so only the few scores at or above it (about N + a few per row) are sorted. Ties are ordered
by item index, as in ``base.topk``; among items tied exactly at the cut-off the lowest indexes get
in (``base.topk`` leaves that to its partition).

Pure numpy: no Django.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from recommenders.algorithms.base import Recommender, as_user_items, mask_liked

# Rows scored per block: a block of scores (~16 MB of float32) stays in cache while it is masked,
# folded and compared, which matters more here than BLAS efficiency on taller blocks.
BLOCK_CELLS = 1 << 22
_LOWEST = np.finfo(np.float32).min
# How many of a user's own items may explain their list ("because you viewed X").
REASON_ANCHORS = 5


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-n of a float32 score block: ids (rows, n) int64 best first, ties by lower index,
    scores float32; entries scored -inf or NaN never come back (id -1, score -inf in their place).
    NaN entries of ``scores`` may be overwritten with -inf."""
    n_rows, n_cols = scores.shape
    n = max(0, min(n, n_cols))
    ids = np.full((n_rows, n), -1, dtype=np.int64)
    values = np.full((n_rows, n), -np.inf, dtype=np.float32)
    if not n or not n_rows:
        return ids, values
    groups = min(n_cols, 8 * n)
    depth = n_cols // groups
    folded = np.maximum.reduce(scores[:, : depth * groups].reshape(n_rows, depth, groups), axis=1)
    rest = n_cols - depth * groups
    if rest:
        np.maximum(folded[:, :rest], scores[:, depth * groups :], out=folded[:, :rest])
    if np.isnan(folded).any():  # maximum propagates NaN: only then is the whole block scanned for it
        scores[np.isnan(scores)] = -np.inf
        return top_n(scores, n)
    bound = np.partition(folded, groups - n, axis=1)[:, groups - n]
    # Rows with fewer than n scored items: every scored one is a candidate, never a -inf.
    np.maximum(bound, _LOWEST, out=bound)
    flat = np.flatnonzero(scores >= bound[:, None])  # by row, then by column
    rows = flat // n_cols
    picked = scores.ravel()[flat]
    # One stable sort by (row, score descending) keeps equal scores in column order: the score as
    # an unsigned integer that orders like the float (+0.0 for -0.0, which compares equal).
    bits = (picked + np.float32(0)).view(np.uint32)
    descending = np.where(bits >> 31, bits, ~bits & np.uint32(0x7FFFFFFF)).astype(np.uint64)
    order = np.argsort((rows.astype(np.uint64) << np.uint64(32)) | descending, kind="stable")
    rows, flat, picked = rows[order], flat[order], picked[order]
    cols = flat - rows * n_cols
    counts = np.bincount(rows, minlength=n_rows)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < n
    ids[rows[keep], rank[keep]] = cols[keep]
    values[rows[keep], rank[keep]] = picked[keep]
    return ids, values


def recommend_many(
    model: Recommender,
    userids: np.ndarray,
    user_items: sparse.csr_matrix,
    N: int,
    *,
    recalculate_user: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``model.recommend(userids, user_items, N, recalculate_user=...)`` for an array of users (one
    row of ``user_items`` per user, already-liked items filtered, no context), through ``top_n``."""
    userids = np.asarray(userids, dtype=np.int64)
    rows = as_user_items(user_items)
    n = max(0, min(N, model.n_items))
    ids = np.full((len(userids), n), -1, dtype=np.int64)
    values = np.full((len(userids), n), -np.inf, dtype=np.float32)
    step = max(1, BLOCK_CELLS // max(model.n_items, 1))
    for start in range(0, len(userids), step):
        stop = min(start + step, len(userids))
        block = rows[start:stop]
        scores = model.score(userids[start:stop], block, recalculate_user=recalculate_user)
        if scores is None:  # a model that cannot score densely: its own recommend
            ids[start:stop], values[start:stop] = model.recommend(
                userids[start:stop], block, N=n, recalculate_user=recalculate_user
            )
            continue
        scores = np.asarray(scores, dtype=np.float32)  # a new array (the contract of `_score`)
        mask_liked(scores, block)
        ids[start:stop], values[start:stop] = top_n(scores, n)
    return ids, values


def best_anchors(model: Recommender, anchors: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each of ``items`` (columns), the index in ``anchors`` (columns of the user's own items)
    of the anchor most similar to it, -1 when none is: the first anchor on ties, never the item
    itself, and only a positive similarity explains ("because you viewed X"). Asks the model for
    the similarity of those pairs only (``similarity_between``)."""
    anchors, items = np.asarray(anchors, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if not len(anchors) or not len(items) or not model.has_similar_items:
        return np.full(len(items), -1, dtype=np.int64)
    sims = np.array(model.similarity_between(anchors, items), dtype=np.float32)
    sims[np.isnan(sims)] = -np.inf
    sims[anchors[:, None] == items[None, :]] = -np.inf
    best = sims.argmax(axis=0)
    return np.where(sims[best, np.arange(len(items))] > 0, best, -1)


def training_anchors(user_items: sparse.csr_matrix, k: int) -> np.ndarray:
    """Each user's ``k`` strongest items in their training row (decayed weights favour recent
    ones), strongest first, ties by column, -1 padding: what explains a list computed from it."""
    X = user_items
    counts = np.diff(X.indptr)
    anchors = np.full((X.shape[0], k), -1, dtype=np.int64)
    if not X.nnz or not k:
        return anchors
    row_of = np.repeat(np.arange(X.shape[0]), counts)
    order = np.lexsort((-X.data, row_of))  # by row, then weight descending (stable: column order)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = (rank < k) & (X.data[order] > 0)
    anchors[row_of[order][keep], rank[keep]] = X.indices[order][keep]
    return anchors


def reasons_many(
    model: Recommender, user_items: sparse.csr_matrix, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reasons of lists ``ids`` (rows of item columns, -1 padding) computed from ``user_items``
    (the same rows), as ``best_anchors`` gives them for one list: each row's anchors (its ``k``
    strongest items, -1 padding) and, per item, the index of the anchor explaining it (255 when
    none does), as ``store.toplist_values`` takes them. One ``similarity_pairs`` call per block."""
    ids = np.asarray(ids, dtype=np.int64)
    slots = np.full(ids.shape, 255, dtype=np.uint8)
    if not model.has_similar_items or not k or not ids.size:
        return np.full((len(ids), k), -1, dtype=np.int64), slots
    anchors = training_anchors(as_user_items(user_items), k)
    sims = np.array(model.similarity_pairs(np.maximum(anchors, 0), np.maximum(ids, 0)), dtype=np.float32)
    sims[np.isnan(sims)] = -np.inf
    sims[np.broadcast_to((anchors < 0)[:, :, None], sims.shape)] = -np.inf
    sims[anchors[:, :, None] == ids[:, None, :]] = -np.inf
    best = sims.argmax(axis=1)
    explained = (np.take_along_axis(sims, best[:, None, :], axis=1)[:, 0, :] > 0) & (ids >= 0)
    slots[explained] = best[explained]
    return anchors, slots

"""Neighbourhood models: item-to-item (implicit.nearest_neighbours: cosine, BM25, TF-IDF) and
user-to-user ("visitors like you")."""

from __future__ import annotations

import warnings
from typing import Any, Self

import numpy as np
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender
from implicit.utils import ParameterWarning
from scipy import sparse
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from recommenders.algorithms.base import MAX_BLOCK_CELLS, ItemFeatures, Recommender, UserContext, as_user_items


def _positive(matrix: sparse.csr_matrix, *, binary: bool) -> sparse.csr_matrix:
    """Neighbourhoods are built from positive evidence only: a thumbs-down is a filter, not a
    similarity."""
    X = matrix.copy()
    X.data = np.where(X.data > 0, 1.0 if binary else X.data, 0.0)
    X.eliminate_zeros()
    return X


class ItemKNN(Recommender):
    """Scores = the user's row times a K-nearest-neighbour item-item similarity matrix."""

    name = "itemknn"
    defaults = {"similarity": "cosine", "K": 100, "K1": 1.2, "B": 0.75, "binary": False, "num_threads": 0}

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        p = self._params
        kind, K, threads = p["similarity"], int(p["K"]), int(p["num_threads"])
        if K < 1:
            raise ValueError(f"itemknn: K must be >= 1, got {K}")
        if kind == "cosine":
            model = CosineRecommender(K=K, num_threads=threads)
        elif kind == "bm25":
            model = BM25Recommender(K=K, K1=float(p["K1"]), B=float(p["B"]), num_threads=threads)
        elif kind == "tfidf":
            model = TFIDFRecommender(K=K, num_threads=threads)
        else:
            raise ValueError(f"itemknn: similarity must be cosine, bm25 or tfidf, got {kind!r}")
        # ItemItemRecommender.fit wants float64.
        X = _positive(as_user_items(user_items, dtype=np.float64), binary=bool(p["binary"]))
        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
            # implicit converts its own normalised copy to CSR internally and warns about it.
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(X, show_progress=False)
        self.similarity = sparse.csr_matrix(model.similarity, dtype=np.float32)
        self._fitted(X)
        return self

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        X = _positive(rows, binary=bool(self._params["binary"])).astype(np.float32)
        return (X @ self.similarity).toarray()

    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        return self.similarity[itemids].toarray()

    def similarity_between(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return self.similarity[itemids][:, others].toarray()

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "similarity": self.similarity}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.similarity = sparse.csr_matrix(state["similarity"], dtype=np.float32)


class UserKNN(Recommender):
    """ "Visitors like you": cosine similarity of the user's row to every training user, the K most
    similar kept, their rows summed with those similarities as weights.

    Works for users outside training too (their row is all it needs). The training rows are part
    of the artifact.
    """

    name = "userknn"
    defaults = {"K": 50, "binary": True, "exponent": 1.0}

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        if int(self._params["K"]) < 1:
            raise ValueError(f"userknn: K must be >= 1, got {self._params['K']}")
        X = _positive(as_user_items(user_items), binary=bool(self._params["binary"]))
        self.train = X.astype(np.float32)
        self.train_unit = self._unit(self.train)
        self._fitted(X)
        return self

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        out = np.zeros((len(userids), self.n_items), dtype=np.float32)
        # The user-user similarity block is (users in block x all training users): bound it too.
        step = max(1, MAX_BLOCK_CELLS // max(self.n_users, 1))
        for start in range(0, len(userids), step):
            stop = min(start + step, len(userids))
            out[start:stop] = self._score_block(userids[start:stop], rows[start:stop], recalculate_user)
        return out

    def _score_block(self, userids: np.ndarray, rows: sparse.csr_matrix, recalculate_user: bool) -> np.ndarray:
        K = min(int(self._params["K"]), self.train.shape[0])
        query = normalize(_positive(rows, binary=bool(self._params["binary"])), norm="l2", axis=1)
        sims = (query.astype(np.float32) @ self.train_unit.T).toarray()
        if not recalculate_user:
            # A known user is not their own neighbour.
            own = np.flatnonzero((userids >= 0) & (userids < self.n_users))
            sims[own, userids[own]] = 0.0
        if sims.shape[1] > K:
            drop = np.argpartition(-sims, K - 1, axis=1)[:, K:]
            np.put_along_axis(sims, drop, 0.0, axis=1)
        if self._params["exponent"] != 1.0:
            sims = np.power(np.maximum(sims, 0.0), float(self._params["exponent"]))
        return (sparse.csr_matrix(sims) @ self.train).toarray()

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "train": self.train}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.train = sparse.csr_matrix(state["train"], dtype=np.float32)
        self.train_unit = self._unit(self.train)

    @staticmethod
    def _unit(train: sparse.csr_matrix) -> sparse.csr_matrix:
        if not train.shape[1]:  # no items: scikit-learn refuses to normalise zero columns
            return train.copy()
        return normalize(train, norm="l2", axis=1).astype(np.float32).tocsr()

"""Matrix factorisation with implicit's AlternatingLeastSquares (Hu, Koren, Volinsky 2008).

Users whose events came after training (or who were never in training) are scored by recomputing
their factors from a fresh row against the fixed item factors (``recalculate_user``), which is one
small least-squares solve per user, batched inside implicit.

``user_weight`` a > 0 scales each user's confidences by n_u^-a (n_u: the user's stored
interactions), rescaled so the average interaction keeps its confidence: heavy users stop
dominating the item factors. The rescaling constant is kept with the model so that recalculated
users are weighted exactly as in training. (Same weighting as EASE's ``user_weight``.)
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy import sparse
from threadpoolctl import threadpool_limits

from recommenders.algorithms.base import (
    ItemFeatures,
    Recommender,
    UserContext,
    as_user_items,
    user_weight_scale,
    user_weights,
)


def _unit(factors: np.ndarray) -> np.ndarray:
    """Vectors (the last axis) scaled to unit length (zero ones stay zero), as `ALS._similar` scales them."""
    norms = np.linalg.norm(factors, axis=-1)
    norms[norms == 0] = 1.0
    return factors / norms[..., None]


class ALS(Recommender):
    name = "als"
    # implicit's own defaults except: 64 factors (the reference point), a seed so that
    # training twice gives the same model, and alpha as a confidence multiplier on the weights.
    defaults = {
        "factors": 64,
        "regularization": 0.01,
        "alpha": 1.0,
        "iterations": 15,
        "random_state": 42,
        "num_threads": 0,
        "user_weight": 0.0,
    }
    # Training's rescaling of the user weights (see user_weights); 1 when users are not weighted.
    weight_scale = 1.0

    def _new_model(self) -> AlternatingLeastSquares:
        p = self._params
        return AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            random_state=p["random_state"],
            num_threads=int(p["num_threads"]),
            dtype=np.float32,
        )

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        X = as_user_items(user_items, dtype=np.float32)
        exponent = float(self._params["user_weight"])
        if not 0 <= exponent <= 2:
            raise ValueError(f"als: user_weight must be in [0, 2], got {exponent}")
        weighted, self.weight_scale = X, 1.0
        if exponent:
            self.weight_scale = user_weight_scale(np.diff(X.indptr), exponent)
            weighted = as_user_items(sparse.diags(user_weights(X, exponent).astype(np.float32)) @ X, dtype=np.float32)
        model = self._new_model()
        # implicit's own threads do the work; BLAS threads on top of them only oversubscribe.
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(weighted, show_progress=False)
        self.model = self._for_serving(model)
        self._fitted(X)
        return self

    @property
    def user_factors(self) -> np.ndarray:
        return self.model.user_factors

    @property
    def item_factors(self) -> np.ndarray:
        return self.model.item_factors

    def user_vectors(self, userids: np.ndarray, rows: sparse.csr_matrix, *, recalculate_user: bool) -> np.ndarray:
        """Trained factors for known users; recomputed from ``rows`` when asked, and always for
        users outside the training matrix (userid < 0 or >= n_users)."""
        fresh = np.ones(len(userids), dtype=bool) if recalculate_user else (userids < 0) | (userids >= self.n_users)
        vectors = np.zeros((len(userids), self.item_factors.shape[1]), dtype=np.float32)
        known = ~fresh
        if known.any():
            vectors[known] = self.user_factors[userids[known]]
        if fresh.any():
            idx = np.flatnonzero(fresh)
            vectors[fresh] = self.model.recalculate_user(idx, self._weighted(as_user_items(rows[idx])))
        return vectors

    def _weighted(self, rows: sparse.csr_matrix) -> sparse.csr_matrix:
        """Rows with training's user weighting (n_u^-a times training's scale) applied."""
        exponent = float(self._params["user_weight"])
        if not exponent:
            return rows
        counts = np.maximum(np.diff(rows.indptr), 1).astype(np.float64)
        weights = (self.weight_scale * counts**-exponent).astype(np.float32)
        return as_user_items(sparse.diags(weights) @ rows, dtype=np.float32)

    @staticmethod
    def _for_serving(model: AlternatingLeastSquares) -> AlternatingLeastSquares:
        """After training, recalculation runs on one thread: a one-user solve takes ~0.03 ms on one
        thread but ~40 ms when implicit starts its OpenMP team on every call (measured on 2 busy
        cores), and even 100k users take seconds single-threaded."""
        model.num_threads = 1
        return model

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        return self.user_vectors(userids, rows, recalculate_user=recalculate_user) @ self.item_factors.T

    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        unit = _unit(self.item_factors)
        return unit[itemids] @ unit.T

    def similarity_between(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return _unit(self.item_factors[itemids]) @ _unit(self.item_factors[others]).T

    def similarity_pairs(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return np.matmul(_unit(self.item_factors[itemids]), _unit(self.item_factors[others]).transpose(0, 2, 1))

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "weight_scale": self.weight_scale,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.weight_scale = float(state.get("weight_scale", 1.0))  # artifacts from before user_weight
        model = self._new_model()
        model.user_factors = np.ascontiguousarray(state["user_factors"], dtype=np.float32)
        model.item_factors = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        self.model = self._for_serving(model)

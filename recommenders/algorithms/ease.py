"""EASE (Steck 2019): a closed-form item-item linear model, for catalogues whose item-item matrix
fits in memory.

B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, then diag(B) = 0; a user's scores are
their row times B. With ``dropout`` p > 0 it is DLAE instead (Steck, "Autoencoders that don't
overfit towards the identity", NeurIPS 2020): B = (G + L)^-1 G with G = X^T X and
L = diag(p / (1 - p) * diag(G) + lambda), i.e. an L2 penalty that grows with item popularity in
place of the zero-diagonal constraint; computed as I - P L with P = (G + L)^-1, one inverse too.

``user_weight`` a > 0 weighs each user's row by n_u^-a in the Gram matrix (G = X^T W X, n_u the
user's number of items), so heavy users (and bots) stop dominating the item-item statistics. The
weights are rescaled so that the average interaction keeps weight 1: the Gram matrix keeps its
scale and ``l2`` keeps its meaning whether or not users are weighted. On MovieLens-100K validation
splits the default hybrid with a = 0.5 beats a = 0 on every split (see the hybrid's docstring).

One dense n_items x n_items inverse: ``max_items`` guards memory and time (measured on this
project's 2-core machine, one BLAS thread: 4,000 items take ~6 s; cost grows with the cube, so the
default 8,000 is ~50 s and ~1.5 GB). Fitting beyond it raises CatalogueTooLarge with a message and
the hybrid falls back to ALS.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from scipy import linalg, sparse

from recommenders.algorithms.base import ItemFeatures, Recommender, UserContext, as_user_items, user_weights


class CatalogueTooLarge(ValueError):
    """The dense item-item matrix of this algorithm would not fit the configured bound."""


class EASE(Recommender):
    name = "ease"
    # lambda 500 is the usual MovieLens-scale value; see bench/recommenders_quality.py for tuning.
    defaults = {"l2": 500.0, "dropout": 0.0, "user_weight": 0.0, "binary": True, "max_items": 8_000}

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        X = as_user_items(user_items, dtype=np.float64)
        n_items = X.shape[1]
        if n_items > int(self._params["max_items"]):
            raise CatalogueTooLarge(
                f"ease: {n_items} items exceed max_items={self._params['max_items']} "
                "(the dense item-item matrix would not fit); use itemknn or als"
            )
        if float(self._params["l2"]) <= 0:
            raise ValueError(f"ease: l2 must be > 0, got {self._params['l2']}")
        if self._params["binary"]:
            # Presence, not intensity: negatives (thumbs down) stay negative evidence.
            X = X.copy()  # as_user_items may hand back the caller's own matrix
            X.data = np.sign(X.data)
        dropout = float(self._params["dropout"])
        if not 0 <= dropout < 1:
            raise ValueError(f"ease: dropout must be in [0, 1), got {dropout}")
        user_weight = float(self._params["user_weight"])
        if not 0 <= user_weight <= 2:
            raise ValueError(f"ease: user_weight must be in [0, 2], got {user_weight}")
        gram = (X.T @ sparse.diags(user_weights(X, user_weight)) @ X).toarray()
        if dropout > 0:
            penalty = dropout / (1 - dropout) * np.diag(gram) + float(self._params["l2"])
            gram[np.diag_indices(n_items)] += penalty
            P = linalg.inv(gram, overwrite_a=True, check_finite=False)
            # (G + L)^-1 G = I - (G + L)^-1 L: one inverse, no second n^3 product.
            B = -P * penalty[None, :]
            B[np.diag_indices(n_items)] += 1.0
        else:
            gram[np.diag_indices(n_items)] += float(self._params["l2"])
            P = linalg.inv(gram, overwrite_a=True, check_finite=False)
            B = P / (-np.diag(P))
            B[np.diag_indices(n_items)] = 0.0
        self.B = B.astype(np.float32)
        self._fitted(X)
        return self

    def _prepare(self, rows: sparse.csr_matrix) -> sparse.csr_matrix:
        if self._params["binary"]:
            rows = rows.copy()
            rows.data = np.sign(rows.data)
        return rows

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        return np.asarray(self._prepare(rows) @ self.B, dtype=np.float32)

    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        # Row i of B: how much having item i speaks for each other item.
        return self.B[itemids]

    def similarity_between(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return self.B[np.ix_(itemids, others)]

    def similarity_pairs(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return self.B[np.asarray(itemids)[:, :, None], np.asarray(others)[:, None, :]]

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "B": self.B}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.B = np.asarray(state["B"], dtype=np.float32)

"""Popularity and trending: time-decayed counts of the users who interacted with each item, overall
and per group (segment or context bucket), as the non-personalised baseline and the cold-start
default.

A group's list is shrunk towards the overall list (``shrinkage`` pseudo-users), so a group of three
visitors does not publish their three items as "trending in your segment".
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from scipy import sparse

from recommenders.algorithms.base import ItemFeatures, Recommender, UserContext, as_user_items, topk

SECONDS_PER_DAY = 86_400.0


def decay_weights(
    user_items: sparse.csr_matrix,
    timestamps: sparse.csr_matrix | None,
    *,
    half_life_days: float | None,
    now: float | None = None,
) -> sparse.csr_matrix:
    """``user_items`` with every cell multiplied by 0.5 ** (age / half-life).

    ``timestamps`` must have the same sparsity as ``user_items`` (unix seconds per cell); cells
    without a timestamp get weight 0. With no half-life or no timestamps the matrix is unchanged.
    """
    matrix = as_user_items(user_items, dtype=np.float64)
    if not half_life_days or timestamps is None:
        return matrix
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    times = sparse.csr_matrix(timestamps, dtype=np.float64, copy=True)
    if times.shape != matrix.shape:
        raise ValueError(f"timestamps has shape {times.shape}, user_items {matrix.shape}")
    times.sort_indices()
    if now is None:
        now = float(times.data.max()) if times.nnz else 0.0
    age_days = np.maximum(now - times.data, 0.0) / SECONDS_PER_DAY
    decay = times.copy()
    decay.data = np.exp2(-age_days / float(half_life_days))
    return sparse.csr_matrix(matrix.multiply(decay))


def group_indicator(user_groups: Any, n_users: int) -> sparse.csr_matrix:
    """(n_groups, n_users) 0/1 matrix from a group index per user (-1 = none) or from a
    (n_users, n_groups) membership matrix (a user may be in several segments)."""
    if sparse.issparse(user_groups):
        membership = sparse.csr_matrix(user_groups, dtype=np.float64, copy=True)
        if membership.shape[0] != n_users:
            raise ValueError(f"user_groups has {membership.shape[0]} rows for {n_users} users")
        membership.data = (membership.data != 0).astype(np.float64)
        return sparse.csr_matrix(membership.T)
    groups = np.asarray(user_groups, dtype=np.int64)
    if groups.shape != (n_users,):
        raise ValueError(f"user_groups must have one entry per user ({n_users}), got shape {groups.shape}")
    member = groups >= 0
    n_groups = int(groups.max()) + 1 if member.any() else 0
    return sparse.csr_matrix(
        (np.ones(int(member.sum())), (groups[member], np.flatnonzero(member))), shape=(n_groups, n_users)
    )


class Popularity(Recommender):
    """Share of users who interacted with each item (decayed), overall and per group."""

    name = "popularity"
    defaults = {"half_life_days": None, "binary": True, "shrinkage": 20.0}

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        X = as_user_items(user_items, dtype=np.float64).copy()
        # Thumbs-down and other negative signals never make an item popular.
        X.data = np.where(X.data > 0, 1.0 if self._params["binary"] else X.data, 0.0)
        X.eliminate_zeros()
        W = decay_weights(X, timestamps, half_life_days=self._params["half_life_days"], now=now)
        n_users = max(X.shape[0], 1)
        self.item_rates = np.asarray(W.sum(axis=0)).ravel().astype(np.float32) / n_users
        if user_groups is not None:
            G = group_indicator(user_groups, X.shape[0])
            group_sizes = np.asarray(G.sum(axis=1)).ravel()
            counts = np.asarray((G @ W).todense())
            m = float(self._params["shrinkage"])
            # Shrunk estimate of the group's rate: (count + m * overall rate) / (size + m).
            self.group_rates = ((counts + m * self.item_rates[None, :]) / (group_sizes[:, None] + m)).astype(np.float32)
            self.group_sizes = group_sizes.astype(np.int64)
        else:
            self.group_rates = np.zeros((0, X.shape[1]), dtype=np.float32)
            self.group_sizes = np.zeros(0, dtype=np.int64)
        self._fitted(X)
        return self

    @property
    def n_groups(self) -> int:
        return self.group_rates.shape[0]

    def group_scores(self, groups: np.ndarray | None, n_users: int) -> np.ndarray:
        """(n_users, n_items) scores: the user's group list, or the overall list for group -1 or a
        group the model was not fitted with."""
        scores = np.broadcast_to(self.item_rates, (n_users, self.n_items)).copy()
        if groups is not None and self.n_groups:
            groups = np.asarray(groups, dtype=np.int64)
            known = (groups >= 0) & (groups < self.n_groups)
            scores[known] = self.group_rates[groups[known]]
        return scores

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        groups = None if context is None else context.groups
        return self.group_scores(groups, len(userids))

    def top(self, N: int = 10, *, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The N most popular items overall, or in ``group``."""
        scores = self.group_scores(None if group is None else np.array([group]), 1)
        ids, vals = topk(scores, N)
        keep = vals[0] > 0
        return ids[0][keep], vals[0][keep]

    def top_by_group(self, N: int = 10) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per-group top lists for publishing (e.g. trending per segment or per device/hour band)."""
        if not self.n_groups:
            return {}
        ids, vals = topk(self.group_rates.copy(), N)
        return {g: (ids[g][vals[g] > 0], vals[g][vals[g] > 0]) for g in range(self.n_groups)}

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "item_rates": self.item_rates,
            "group_rates": self.group_rates,
            "group_sizes": self.group_sizes,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.item_rates = np.asarray(state["item_rates"], dtype=np.float32)
        self.group_rates = np.asarray(state["group_rates"], dtype=np.float32)
        self.group_sizes = np.asarray(state["group_sizes"], dtype=np.int64)


class Trending(Popularity):
    """Popularity with a short half-life: what is picking up now."""

    name = "trending"
    defaults = {**Popularity.defaults, "half_life_days": 7.0}

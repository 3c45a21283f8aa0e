"""Bounded hyperparameter search of a configuration within its time budget, through the
algorithms' own search (`recommenders.algorithms.tuning.tune`). It runs on a validation split
carved out of the training split (each evaluated user's latest training interaction), never on
the holdout the version is then measured on, so the reported metrics stay honest."""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from recommenders.algorithms import tuning
from recommenders.algorithms.base import ItemFeatures
from recommenders.algorithms.registry import DEFAULT_ALGORITHM
from recommenders.models import RecommenderConfig
from recommenders.services.evaluation import Split, holdout_split
from recommenders.services.matrix import Interactions

logger = logging.getLogger(__name__)


def validation_split(split: Split, timestamps: sparse.csr_matrix) -> Split:
    """Split the training part again by time: the next-latest interactions become validation."""
    train = split.train.tocoo()
    cell_times = np.asarray(timestamps[train.row, train.col]).ravel()
    inner = Interactions(
        rows=train.row.astype(np.int64),
        cols=train.col.astype(np.int64),
        weights=train.data.astype(np.float32),
        timestamps=cell_times,
        profile_ids=np.arange(train.shape[0], dtype=np.int64),
        item_ids=np.arange(train.shape[1]).astype(str),
        trained_through=None,
        event_types={},
    )
    return holdout_split(inner, max_users=len(split.users) or 1)


def tune(
    *,
    config: RecommenderConfig,
    split: Split,
    timestamps: sparse.csr_matrix,
    features: ItemFeatures,
    k: int,
    budget_seconds: float,
) -> tuple[dict, list[dict]]:
    """The best parameters found within the budget and the log of every trial (the configured
    parameters are always the first trial, so tuning never picks something worse on validation)."""
    params = dict(config.params or {})
    inner = validation_split(split, timestamps)
    if not len(inner.users):
        return params, [{"note": "too little history for a validation split: not tuned"}]
    name = DEFAULT_ALGORITHM if config.algorithm == "default" else config.algorithm
    space = tuning.DEFAULT_SPACES.get(name) or {}
    # A space of choices only is finite: walk it as a grid (random draws from an exhausted finite
    # space would only repeat themselves until the budget check, which repeats never reach).
    method = "grid" if space and all(isinstance(spec, list | tuple) for spec in space.values()) else "random"
    try:
        result = tuning.tune(
            config.algorithm,
            inner.train,
            inner.test,
            base_params=params,
            k=k,
            metric=config.promotion_metric,
            budget_seconds=budget_seconds,
            item_features=features,
            users=inner.users,
            method=method,
        )
    except ValueError as exc:  # no search space for this algorithm, unknown metric, every trial failed
        logger.warning("tuning %s skipped: %s", config.key, exc)
        return params, [{"note": f"not tuned: {exc}"}]
    return dict(result.best_params), result.log()

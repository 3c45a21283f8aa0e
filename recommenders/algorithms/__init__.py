"""Recommender algorithms: pure numpy/scipy/implicit/scikit-learn, no Django.

Interface (implicit's RecommenderBase shape)::

    from recommenders.algorithms import build, dump, load, ItemFeatures, UserContext

    model = build("default").fit(user_items, item_features=features, user_groups=groups,
                                 timestamps=times, now=now)
    ids, scores = model.recommend(userids, user_items[userids], N=50)        # 2-D, padded with -1
    ids, scores = model.recommend_fresh(row_built_now, N=50)                 # 1-D, newer events
    ids, scores = model.similar_items(item_col, N=10)
    blob = dump(model); model = load(blob)                                   # artifact bytes, no pickle

Re-ranking (``rerank``), evaluation (``metrics``) and hyperparameter search (``tuning``) live in
their own modules.
"""

from recommenders.algorithms.base import (
    ItemFeatures,
    Preferences,
    Recommender,
    UserContext,
    as_user_items,
    dump,
    load,
    topk,
)
from recommenders.algorithms.registry import ALGORITHMS, DEFAULT_ALGORITHM, build

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "ItemFeatures",
    "Preferences",
    "Recommender",
    "UserContext",
    "as_user_items",
    "build",
    "dump",
    "load",
    "topk",
]

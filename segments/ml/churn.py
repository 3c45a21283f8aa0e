"""Churn risk: will a profile show no activity in the next N days? Trained on history, scored today.

Training looks back: at a cutoff N days ago, each profile's features are what was known then
(recency, activity in windows, spend, active days, tenure, event-type mix) and its label is whether it
then went quiet for the N days that followed (1 = churned). The model is evaluated on profiles it
never saw (AUC on a held-out share), then refitted on all of them and applied to today's features.

Features are computed in the database by the Django service (set-based); ``churn_features`` computes
the very same features from an event log in numpy, for the tests and as the reference definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from segments.ml.rfm import NotEnoughData

DAY = 86_400.0
# Event types whose share of the last 90 days' activity is a feature (the demo storefront's and the
# Segment e-commerce names map onto these at ingestion).
MIX_TYPES = ("page_view", "product_view", "add_to_cart", "purchase")
PURCHASE = "purchase"
WINDOWS = (7, 30, 90)
CHURN_FEATURES = (
    "recency_days",
    "tenure_days",
    "events_ever",
    *(f"events_{w}d" for w in WINDOWS),
    "active_days_30d",
    "active_days_90d",
    "purchases_ever",
    "purchases_90d",
    "revenue_ever",
    *(f"share_{t}_90d" for t in MIX_TYPES),
)
MIN_PROFILES = 20  # fewer labelled profiles than this and a held-out AUC means nothing
MIN_PER_CLASS = 5
FIT_SAMPLE = 300_000


@dataclass(frozen=True)
class ChurnModel:
    """What is kept (pickled): the fitted classifier and the feature order it expects."""

    classifier: HistGradientBoostingClassifier
    features: tuple[str, ...] = CHURN_FEATURES

    def predict(self, features: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Probability of churn (0..1) for each row."""
        with threadpool_limits(limits=threads):
            return self.classifier.predict_proba(_as_matrix(features))[:, 1]


@dataclass(frozen=True)
class ChurnFit:
    model: ChurnModel
    auc: float  # on held-out profiles, before the refit on all
    n_train: int
    n_test: int
    churn_rate: float  # share of labelled profiles that churned


def churn_fit(
    features: np.ndarray, churned: np.ndarray, *, seed: int = 0, test_size: float = 0.25, threads: int = 1
) -> ChurnFit:
    """Fit on labelled profiles: AUC on a stratified held-out share, then refit on everything.

    ``threads``: OpenMP threads for the trees. One by default: Celery runs a process per core already,
    and OpenMP threads competing for busy cores are slower than one (20x on a loaded 2-core host)."""
    features, churned = _as_matrix(features), np.asarray(churned, dtype=np.int8)
    if len(features) != len(churned):
        raise ValueError(f"{len(features)} feature rows but {len(churned)} labels")
    positives = int(churned.sum())
    negatives = len(churned) - positives
    if len(churned) < MIN_PROFILES or min(positives, negatives) < MIN_PER_CLASS:
        raise NotEnoughData(
            f"churn model needs {MIN_PROFILES}+ profiles with history and {MIN_PER_CLASS}+ of each outcome; "
            f"got {len(churned)} ({positives} churned, {negatives} stayed)"
        )
    rng = np.random.default_rng(seed)
    if len(features) > FIT_SAMPLE:
        keep = np.sort(rng.choice(len(features), FIT_SAMPLE, replace=False))
        features, churned = features[keep], churned[keep]
    x_train, x_test, y_train, y_test = train_test_split(
        features, churned, test_size=test_size, random_state=seed, stratify=churned
    )
    with threadpool_limits(limits=threads):
        held_out = _classifier(seed).fit(x_train, y_train)
        auc = float(roc_auc_score(y_test, held_out.predict_proba(x_test)[:, 1]))
        final = _classifier(seed).fit(features, churned)
    return ChurnFit(
        model=ChurnModel(classifier=final),
        auc=round(auc, 4),
        n_train=len(x_train),
        n_test=len(x_test),
        churn_rate=round(float(churned.mean()), 4),
    )


def churn_features(
    profiles: np.ndarray,
    timestamps: np.ndarray,
    types: np.ndarray,
    values: np.ndarray,
    *,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Features at ``cutoff`` (epoch seconds) from an event log, one row per profile with events before it.

    ``profiles``: profile id per event; ``timestamps``: epoch seconds; ``types``: event names;
    ``values``: purchase amounts (NaN when none). Only events strictly before the cutoff count.
    Returns (profile ids ascending, features in ``CHURN_FEATURES`` order).
    """
    profiles = np.asarray(profiles)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    types = np.asarray(types)
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    before = timestamps < cutoff
    profiles, timestamps, types, values = profiles[before], timestamps[before], types[before], values[before]
    ids, row = np.unique(profiles, return_inverse=True)
    n = len(ids)

    def per_profile(weights: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=weights, minlength=n)

    def distinct_days(mask: np.ndarray) -> np.ndarray:
        days = np.floor(timestamps[mask] / DAY).astype(np.int64)
        pairs = np.unique(np.stack([row[mask], days], axis=1), axis=0) if mask.any() else np.empty((0, 2), int)
        return np.bincount(pairs[:, 0], minlength=n).astype(np.float64)

    last = np.full(n, -np.inf)
    np.maximum.at(last, row, timestamps)
    first = np.full(n, np.inf)
    np.minimum.at(first, row, timestamps)
    within = {w: timestamps >= cutoff - w * DAY for w in WINDOWS}
    purchase = types == PURCHASE
    ones = np.ones(len(row))
    columns = {
        "recency_days": (cutoff - last) / DAY,
        "tenure_days": (cutoff - first) / DAY,
        "events_ever": per_profile(ones),
        **{f"events_{w}d": per_profile(within[w] * 1.0) for w in WINDOWS},
        "active_days_30d": distinct_days(within[30]),
        "active_days_90d": distinct_days(within[90]),
        "purchases_ever": per_profile(purchase * 1.0),
        "purchases_90d": per_profile((purchase & within[90]) * 1.0),
        "revenue_ever": per_profile(np.where(purchase, values, 0.0)),
    }
    for name in MIX_TYPES:
        columns[f"{name}_90d"] = per_profile(((types == name) & within[90]) * 1.0)
    return ids, churn_matrix(columns)


def churn_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The feature matrix from per-profile columns: every ``CHURN_FEATURES`` name except the shares,
    plus ``<type>_90d`` counts for each of ``MIX_TYPES`` (turned into shares of ``events_90d`` here)."""
    columns = dict(columns)
    for name in MIX_TYPES:
        columns[f"share_{name}_90d"] = _share(
            np.asarray(columns.pop(f"{name}_90d"), dtype=np.float64), np.asarray(columns["events_90d"], np.float64)
        )
    return np.stack([np.asarray(columns[name], dtype=np.float64) for name in CHURN_FEATURES], axis=1)


def churn_labels(
    profiles: np.ndarray, timestamps: np.ndarray, *, ids: np.ndarray, cutoff: float, horizon_days: int
) -> np.ndarray:
    """1 for each of ``ids`` with no event in [cutoff, cutoff + horizon), else 0."""
    timestamps = np.asarray(timestamps, dtype=np.float64)
    after = (timestamps >= cutoff) & (timestamps < cutoff + horizon_days * DAY)
    return (~np.isin(ids, np.asarray(profiles)[after])).astype(np.int8)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros_like(part), where=whole > 0)


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    # Trees need no scaling, cope with the heavy tails of counts and spend, and saturate sensibly for
    # profiles further from the cutoff than any seen in training.
    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, max_leaf_nodes=15, random_state=seed)


def _as_matrix(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(CHURN_FEATURES):
        raise ValueError(f"churn features must have shape (n, {len(CHURN_FEATURES)}), got {features.shape}")
    return features

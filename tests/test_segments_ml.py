"""Pure ML of segments on synthetic data with a planted structure: RFM clusters find and name the planted
groups, the churn model separates decaying from steady visitors on held-out profiles. No database."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from segments.ml.churn import CHURN_FEATURES, DAY, churn_features, churn_fit, churn_labels
from segments.ml.rfm import NotEnoughData, rfm_fit, rfm_names

HORIZON = 30
END = 200 * DAY


def planted_rfm(seed: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Five groups of (days since last visit, visits, spend) with the name each should get."""
    rng = np.random.default_rng(seed)

    def group(n, days, visits, spend):
        monetary = spend * rng.lognormal(0, 0.3, n) if spend else np.zeros(n)
        return np.stack([rng.gamma(4, days / 4, n), np.maximum(1, rng.poisson(visits, n)), monetary], axis=1)

    groups = [
        (group(300, 2, 30, 2000), "frequent high spenders"),
        (group(400, 2, 1, 0), "new browsers"),
        (group(300, 200, 15, 1500), "lapsed frequent high spenders"),
        (group(500, 150, 2, 0), "lapsed occasional browsers"),
        (group(300, 20, 5, 60), "cooling regular mid spenders"),
    ]
    rows = np.vstack([g for g, _ in groups])
    truth = np.repeat(np.arange(len(groups)), [len(g) for g, _ in groups])
    return rows, truth, [name for _, name in groups]


def event_log(seed: int = 2, profiles: int = 1500, churn_share: float = 0.4):
    """Visitors with Poisson activity; churners' rate decays exponentially from their first visit."""
    rng = np.random.default_rng(seed)
    ids, times, types, values = [], [], [], []
    for pid in range(profiles):
        churner = rng.random() < churn_share
        start, rate = rng.uniform(0, 120) * DAY, rng.uniform(0.2, 1.0)
        decay = rng.uniform(0.03, 0.08) if churner else 0.0
        t = start
        while True:
            current = rate * np.exp(-decay * (t - start) / DAY)
            if current < 0.01:
                break
            t += rng.exponential(1 / current) * DAY
            if t >= END:
                break
            kind = rng.choice(["page_view", "product_view", "add_to_cart", "purchase"], p=[0.4, 0.4, 0.15, 0.05])
            ids.append(pid), times.append(t), types.append(kind)
            values.append(rng.uniform(10, 100) if kind == "purchase" else np.nan)
    return np.array(ids), np.array(times), np.array(types), np.array(values)


def test_rfm_clusters_recover_and_name_the_planted_groups():
    rows, truth, expected = planted_rfm()
    result = rfm_fit(rows, seed=0)

    assert result.k == 5  # chosen by silhouette among 3..6
    for group, name in enumerate(expected):
        labels = result.labels[truth == group]
        majority = np.bincount(labels).argmax()
        assert (labels == majority).mean() > 0.95
        assert result.model.names[majority] == name
    assert sum(result.sizes) == len(rows)


def test_rfm_is_deterministic_and_orders_clusters_by_spend():
    rows, _, _ = planted_rfm()
    first, again = rfm_fit(rows, seed=0), rfm_fit(rows[::-1], seed=0)
    assert first.model.names == again.model.names
    assert np.array_equal(first.labels, again.labels[::-1])
    spend = first.model.centroids_raw()[:, 2]
    assert list(spend) == sorted(spend, reverse=True)


def test_rfm_fixed_k_and_artifact_round_trip():
    rows, _, _ = planted_rfm()
    result = rfm_fit(rows, k=3, seed=0)
    assert result.k == 3 and len(set(result.model.names)) == 3
    restored = pickle.loads(pickle.dumps(result.model))
    assert np.array_equal(restored.predict(rows), result.labels)


def test_rfm_names_stay_unique_when_centroids_read_alike():
    centroids = np.array([[-1.0, 1.0, 1.0], [-1.2, 1.1, 1.2], [1.0, -1.0, -1.0]])
    names = rfm_names(centroids, spend=np.array([900.0, 950.0, 0.0]))
    assert names == ("frequent high spenders", "frequent high spenders (2)", "lapsed occasional browsers")


def test_rfm_refuses_uniform_data_with_a_reason():
    with pytest.raises(NotEnoughData, match="at least 2 different profiles"):
        rfm_fit(np.tile([3.0, 1.0, 0.0], (50, 1)))


def test_churn_model_separates_decaying_visitors_on_held_out_profiles():
    ids, times, types, values = event_log()
    cutoff = END - HORIZON * DAY
    profiles, features = churn_features(ids, times, types, values, cutoff=cutoff)
    labels = churn_labels(ids, times, ids=profiles, cutoff=cutoff, horizon_days=HORIZON)
    fit = churn_fit(features, labels, seed=0)

    assert fit.auc > 0.85
    assert fit.n_test == pytest.approx(0.25 * len(profiles), abs=1)
    # Today's scores: visitors active in the last week are at lower risk than those gone for a month.
    _, now_features = churn_features(ids, times, types, values, cutoff=END)
    risk = fit.model.predict(now_features)
    recency = now_features[:, CHURN_FEATURES.index("recency_days")]
    assert risk[recency < 7].mean() < 0.3 < 0.7 < risk[recency > 30].mean()
    assert ((risk >= 0) & (risk <= 1)).all()


def test_churn_model_on_random_labels_is_no_better_than_chance():
    ids, times, types, values = event_log(seed=3, profiles=800)
    profiles, features = churn_features(ids, times, types, values, cutoff=END - HORIZON * DAY)
    noise = np.random.default_rng(0).integers(0, 2, len(profiles))
    assert churn_fit(features, noise, seed=0).auc < 0.62


def test_churn_refuses_when_one_outcome_is_missing():
    ids, times, types, values = event_log(seed=4, profiles=100)
    profiles, features = churn_features(ids, times, types, values, cutoff=END)
    with pytest.raises(NotEnoughData, match="of each outcome"):
        churn_fit(features, np.zeros(len(profiles)), seed=0)


def test_churn_features_count_only_what_happened_before_the_cutoff():
    ids = np.array([1, 1, 1, 1, 2])
    times = np.array([0.5, 80.2, 95.5, 101.0, 99.0]) * DAY
    types = np.array(["page_view", "purchase", "add_to_cart", "purchase", "product_view"])
    values = np.array([np.nan, 40.0, np.nan, 999.0, np.nan])
    profiles, features = churn_features(ids, times, types, values, cutoff=100 * DAY)
    row = dict(zip(CHURN_FEATURES, features[0], strict=True))
    assert list(profiles) == [1, 2]
    assert row["recency_days"] == pytest.approx(4.5)
    assert row["tenure_days"] == pytest.approx(99.5)
    assert (row["events_ever"], row["events_7d"], row["events_30d"], row["events_90d"]) == (3, 1, 2, 2)
    assert (row["purchases_ever"], row["revenue_ever"]) == (1, 40.0)
    assert row["share_purchase_90d"] == pytest.approx(0.5)
    assert churn_labels(ids, times, ids=profiles, cutoff=100 * DAY, horizon_days=30).tolist() == [0, 1]

"""Offline metrics and splits against hand-computed values (pure, no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from recommenders.algorithms import build
from recommenders.algorithms.metrics import (
    catalogue_coverage,
    evaluate,
    intra_list_diversity,
    ranking_metrics,
    split_random_per_user,
    split_time_holdout,
)
from tests.test_recommenders_algorithms import planted


def test_ranking_metrics_match_hand_computed_values():
    recommended = np.array([[1, 2, 3, 4], [7, 8, 9, 5]])
    # user 0: relevant {2, 4, 9}: hits at ranks 2 and 4. user 1: relevant {7}: hit at rank 1.
    test = sparse.csr_matrix(([1, 1, 1, 1], ([0, 0, 0, 1], [2, 4, 9, 7])), shape=(2, 10))
    m = ranking_metrics(recommended, test, 4)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["recall@4"] == pytest.approx((2 / 3 + 1 / 1) / 2)
    ap0 = (1 / 2 + 2 / 4) / 3
    assert m["map@4"] == pytest.approx((ap0 + 1.0) / 2)
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert m["ndcg@4"] == pytest.approx((ndcg0 + 1.0) / 2)


def test_users_without_held_out_items_do_not_count_and_padding_is_a_miss():
    recommended = np.array([[3, -1], [0, 1]])
    test = sparse.csr_matrix(([1], ([0], [3])), shape=(2, 5))
    m = ranking_metrics(recommended, test, 2)
    assert m["precision@2"] == pytest.approx(0.5)  # only user 0 counts; its padding slot is a miss
    assert m["ndcg@2"] == pytest.approx(1.0)


def test_coverage_and_intra_list_diversity():
    assert catalogue_coverage(np.array([[0, 1], [1, -1]]), 4) == pytest.approx(0.5)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    assert intra_list_diversity(np.array([[0, 1]]), vectors) == pytest.approx(1.0)  # orthogonal
    assert intra_list_diversity(np.array([[0, 2]]), vectors) == pytest.approx(0.0)  # same direction
    # Mean over lists; a list of one item is skipped; works from sparse vectors too.
    assert intra_list_diversity(np.array([[0, 1], [0, 2], [1, -1]]), sparse.csr_matrix(vectors)) == pytest.approx(0.5)


def test_random_split_holds_out_a_fifth_of_each_user_reproducibly():
    X = planted()
    train, test = split_random_per_user(X, fraction=0.2, seed=42)
    per_user = np.diff(test.indptr)
    assert (per_user == 2).all()  # round(0.2 * 8)
    assert (train.multiply(test)).nnz == 0
    np.testing.assert_array_equal((train + test).toarray(), X.toarray())
    _, again_test = split_random_per_user(X, fraction=0.2, seed=42)
    assert (again_test != test).nnz == 0
    _, other = split_random_per_user(X, fraction=0.2, seed=7)
    assert (other != test).nnz > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), density=st.floats(0.05, 0.6), fraction=st.floats(0.05, 0.6))
def test_random_split_partitions_any_matrix(seed, density, fraction):
    X = sparse.random(20, 15, density=density, format="csr", random_state=seed, dtype=np.float32)
    train, test = split_random_per_user(X, fraction=fraction, seed=seed)
    np.testing.assert_allclose((train + test).toarray(), X.toarray())
    counts = np.diff(X.indptr)
    np.testing.assert_array_equal(np.diff(test.indptr), np.floor(fraction * counts + 0.5))


def test_time_holdout_keeps_each_users_latest_items_for_test():
    # user 0: items 0 (t=1), 1 (t=5), 0 again (t=9) -> latest is item 0, all its events leave train.
    # user 1: a single item -> stays in train. user 2: items 2 (t=3), 3 (t=2).
    rows = np.array([0, 0, 0, 1, 2, 2])
    cols = np.array([0, 1, 0, 2, 2, 3])
    ts = np.array([1, 5, 9, 4, 3, 2])
    weights = np.array([1.0, 4.0, 8.0, 1.0, 1.0, 2.0])
    train, test = split_time_holdout(rows, cols, ts, n_last=1, weights=weights, shape=(3, 4))
    assert test.toarray().tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert train.toarray().tolist() == [[0, 4, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]


def test_evaluate_ranks_a_real_model_above_popularity_on_planted_structure():
    X = planted()
    train, test = split_random_per_user(X, seed=1)
    ease = evaluate(build("ease", l2=10.0).fit(train), train, test, k=5, item_vectors=np.eye(40))
    pop = evaluate(build("popularity").fit(train), train, test, k=5)
    assert ease["ndcg@5"] > pop["ndcg@5"]
    assert ease["users"] == 120
    assert 0 < ease["coverage"] <= 1 and 0 <= ease["diversity"] <= 1

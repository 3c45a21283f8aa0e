"""Batch top-N (`algorithms.topn`): the same lists as `recommend()` / `base.topk`, without a full
partition of every row. Pure numpy, no database."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

from recommenders.algorithms import build
from recommenders.algorithms.base import topk
from recommenders.algorithms.topn import recommend_many, top_n

scores_blocks = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 120)),
    # Few distinct values: ties everywhere, at the cut-off too; -inf (filtered) and NaN entries.
    elements=st.sampled_from([-np.inf, np.nan, -1.5, -0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 3.5, 1e30]),
)


@given(scores=scores_blocks, n=st.integers(0, 130))
@settings(max_examples=300, deadline=None)
def test_top_n_keeps_what_topk_keeps_in_its_order(scores, n):
    expected_ids, expected_values = topk(np.where(np.isnan(scores), -np.inf, scores), n)
    ids, values = top_n(scores.copy(), n)
    # Same scores at every rank (padding included); where the scores are above the row's cut-off
    # value, the same items too (which of several items tied at the cut-off get in is free).
    np.testing.assert_array_equal(values, expected_values)
    assert ((ids >= 0) == np.isfinite(values)).all()
    if values.shape[1]:
        cutoff = values[:, -1:]
        above = values > cutoff
        np.testing.assert_array_equal(ids[above], expected_ids[above])
    # Within a list, equal scores come by item index; no item twice.
    for row_ids, row_values in zip(ids, values, strict=True):
        kept, kept_values = row_ids[row_ids >= 0], row_values[row_ids >= 0]
        assert len(set(kept.tolist())) == len(kept)
        same = kept_values[1:] == kept_values[:-1]
        assert (kept[1:][same] > kept[:-1][same]).all()


def test_top_n_on_distinct_scores_is_exactly_topk():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((300, 5000)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[7, :4990] = -np.inf  # a user who has seen almost everything: fewer than N left
    scores[7, 4990:] = np.arange(10, dtype=np.float32)
    expected = topk(scores.copy(), 50)
    got = top_n(scores.copy(), 50)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert (got[0][7] >= 0).sum() == 10


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [("als", {"factors": 8, "iterations": 3}), ("popularity", {}), ("ease", {}), ("itemknn", {})],
)
def test_recommend_many_gives_what_recommend_gives(algorithm, params):
    rng = np.random.default_rng(11)
    dense = (rng.random((120, 90)) < 0.15) * rng.integers(1, 5, (120, 90))
    dense[3] = 1  # a user who has seen every item
    dense[5, :2] = -2  # negative signals are filtered too
    matrix = sparse.csr_matrix(dense.astype(np.float32))
    model = build(algorithm, **params).fit(matrix)
    users = np.arange(120)
    expected_ids, expected_scores = model.recommend(users, matrix[users], N=20)
    ids, scores = recommend_many(model, users, matrix[users], 20)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    # Popularity scores every user alike and ties at the cut-off are free; elsewhere the ids match.
    above = scores > scores[:, -1:]
    np.testing.assert_array_equal(ids[above], expected_ids[above])
    assert (ids[3] == -1).all()
    assert not np.isin(ids[5], [0, 1]).any()


def test_recommend_many_recalculates_users_from_their_rows():
    rng = np.random.default_rng(2)
    matrix = sparse.csr_matrix((rng.random((60, 40)) < 0.2).astype(np.float32))
    model = build("als", factors=6, iterations=3).fit(matrix)
    fresh = matrix[:10]
    expected = model.recommend(np.full(10, -1), fresh, N=5, recalculate_user=True)
    got = recommend_many(model, np.full(10, -1), fresh, 5, recalculate_user=True)
    np.testing.assert_array_equal(got[0], expected[0])

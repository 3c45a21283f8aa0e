"""Content's own row normalization matches scikit-learn's (which it replaced on the serving path)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.preprocessing import normalize as sklearn_normalize

from recommenders.algorithms.content import normalize


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    norm=st.sampled_from(["l1", "l2"]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_rows_scale_like_sklearn_zero_rows_included(rows, cols, density, seed, norm, dtype):
    matrix = sparse.random(rows, cols, density=density, format="csr", dtype=dtype, random_state=seed)
    matrix.data -= 0.5  # negative weights too (a thumbs-down in a profile)
    before = matrix.toarray()
    ours, theirs = normalize(matrix, norm), sklearn_normalize(matrix, norm=norm)
    assert ours.dtype == theirs.dtype and sparse.issparse(ours)
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(matrix.toarray(), before)  # the input is left alone


def test_the_input_is_not_modified_and_integers_become_floats():
    matrix = sparse.csr_matrix(np.array([[3, 4], [0, 0]]))
    out = normalize(matrix)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.toarray(), [[0.6, 0.8], [0.0, 0.0]])
    assert matrix.toarray().tolist() == [[3, 4], [0, 0]]
    assert normalize(np.array([[1.0, 1.0]]), "l1").toarray() == pytest.approx(np.array([[0.5, 0.5]]))

"""User weighting (``user_weight``) in EASE and ALS, what the default hybrid uses: heavy users
(and bots) stop dominating the item statistics, the weights keep the data's scale, EASE stays its
closed form, and ALS weighs recalculated users exactly as in training, also after an artifact
round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from recommenders.algorithms import build, dump, load
from recommenders.algorithms.base import user_weight_scale, user_weights
from recommenders.algorithms.hybrid import Hybrid

N_ITEMS = 30


def community_with_a_bot(seed: int = 0, bots: int = 3) -> sparse.csr_matrix:
    """80 ordinary users with 4..10 items each: items 0..14 go together, items 15..29 go together.
    Then ``bots`` users who touched item 0 and every item of the second group."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(80):
        pool = np.arange(0, 15) if user % 2 == 0 else np.arange(15, 30)
        for item in rng.choice(pool, size=int(rng.integers(4, 11)), replace=False):
            rows.append(user)
            cols.append(int(item))
    for bot in range(80, 80 + bots):
        for item in [0, *range(15, 30)]:
            rows.append(bot)
            cols.append(item)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(80 + bots, N_ITEMS))


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 500), min_size=1, max_size=40),
    exponent=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]),
)
def test_user_weights_keep_the_average_interaction_at_one_and_fall_with_activity(counts, exponent):
    counts = np.array(counts)
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.concatenate([np.arange(c) for c in counts])  # user u has items 0 .. n_u - 1
    X = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(counts), max(counts.max(), 1)))
    np.testing.assert_array_equal(np.diff(X.indptr), counts)
    weights = user_weights(X, exponent)
    if counts.sum():
        assert (weights * counts).sum() == pytest.approx(counts.sum())
    active = counts > 0
    if exponent == 0:
        np.testing.assert_array_equal(weights, np.ones(len(counts)))
    else:
        assert (weights[~active] == 0).all()
        order = np.argsort(counts[active], kind="stable")
        assert np.all(np.diff(weights[active][order]) <= 1e-12)  # more activity, never more weight
        expected = user_weight_scale(counts, exponent) * counts[active] ** -exponent
        np.testing.assert_allclose(weights[active], expected)


def test_weighted_ease_equals_the_dlae_closed_form_on_the_weighted_gram_matrix():
    X = community_with_a_bot()
    n = np.diff(X.indptr).astype(np.float64)
    w = n**-0.5
    w *= n.sum() / (w * n).sum()
    G = (X.T @ sparse.diags(w) @ X).toarray()
    p, lam = 0.5, 3.0
    expected = np.linalg.solve(G + np.diag(p / (1 - p) * np.diag(G) + lam), G)
    model = build("ease", l2=lam, dropout=p, user_weight=0.5).fit(X)
    np.testing.assert_allclose(model.B, expected, atol=1e-4)
    # user_weight 0 is exactly the unweighted model.
    plain = build("ease", l2=lam, dropout=p).fit(X)
    np.testing.assert_allclose(build("ease", l2=lam, dropout=p, user_weight=0.0).fit(X).B, plain.B)


@pytest.mark.parametrize("name, params", [("ease", {"l2": 5.0}), ("als", {"factors": 8, "num_threads": 1})])
def test_a_bot_that_touches_everything_pulls_less_on_an_ordinary_users_recommendations(name, params):
    """A user who has only item 0 (of the first group): the bots tie item 0 to the second group.
    Weighting users (the bots have 16 items, ordinary users 4..10) gives the first group more of
    that user's top five."""
    X = community_with_a_bot(bots=6)
    row = sparse.csr_matrix(([1.0], ([0], [0])), shape=(1, N_ITEMS))

    def first_group_share(user_weight: float) -> float:
        model = build(name, **params, user_weight=user_weight).fit(X)
        scores = model.score(np.array([-1]), row, recalculate_user=True)[0]
        scores[0] = -np.inf
        top = np.argsort(-scores)[:5]
        return float((top < 15).mean()), float(scores[1:15].mean() - scores[15:].mean())

    (plain_share, plain_gap), (weighted_share, weighted_gap) = first_group_share(0.0), first_group_share(1.0)
    assert weighted_gap > plain_gap
    assert weighted_share >= plain_share


def test_weighted_als_recalculates_a_known_user_close_to_their_trained_factors():
    X = community_with_a_bot()
    model = build("als", factors=8, iterations=15, regularization=0.1, num_threads=1, user_weight=0.5).fit(X)
    users = np.arange(80)
    trained = model.user_vectors(users, X[users], recalculate_user=False)
    again = model.user_vectors(users, X[users], recalculate_user=True)
    cos = (trained * again).sum(axis=1) / (np.linalg.norm(trained, axis=1) * np.linalg.norm(again, axis=1))
    assert np.median(cos) > 0.99
    # Without training's weighting the same rows would give other vectors: the weighting is applied.
    unweighted = model.model.recalculate_user(users, X[users])
    assert np.abs(unweighted - again).max() > 1e-3


def test_weighted_als_artifact_recalculates_users_as_before_the_round_trip():
    X = community_with_a_bot()
    model = build("als", factors=8, iterations=10, regularization=0.1, num_threads=1, user_weight=0.5).fit(X)
    assert model.weight_scale != 1.0
    again = load(dump(model))
    assert again.weight_scale == pytest.approx(model.weight_scale)
    row = sparse.csr_matrix((np.ones(5), (np.zeros(5), [15, 16, 17, 18, 19])), shape=(1, N_ITEMS))
    ids, scores = model.recommend_fresh(row, N=5)
    ids2, scores2 = again.recommend_fresh(row, N=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5)


@pytest.mark.parametrize("name", ["ease", "als"])
@pytest.mark.parametrize("bad", [-0.5, 3.0])
def test_a_user_weight_out_of_range_is_refused_with_the_parameter_named(name, bad):
    with pytest.raises(ValueError, match=rf"{name}: user_weight must be in \[0, 2\], got {bad}"):
        build(name, user_weight=bad).fit(community_with_a_bot())


def test_the_default_hybrid_weighs_users_in_ease_and_its_partner_but_not_in_the_als_fallback():
    hybrid = build("default")
    assert isinstance(hybrid, Hybrid)
    assert hybrid.params["main_params"]["user_weight"] == 0.5
    assert hybrid.params["partner_params"]["user_weight"] == 0.25
    assert hybrid.params["fallback_params"].get("user_weight", 0.0) == 0.0
    # A partial override keeps the other defaults (the weighting included).
    tuned = build("hybrid", main_params={"l2": 200.0})
    assert tuned.params["main_params"] == {**hybrid.params["main_params"], "l2": 200.0}

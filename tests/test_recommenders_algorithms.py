"""The recommender algorithms, pure (no database): planted structure is recovered, EASE is its
closed form, the batched path equals the per-user path, artifacts round-trip, the hybrid's
cold-start ladder picks the right source."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from recommenders.algorithms import ALGORITHMS, ItemFeatures, Preferences, UserContext, build, dump, load
from recommenders.algorithms.ease import CatalogueTooLarge
from recommenders.algorithms.nearest import haversine_km, nearest_items

N_USERS, N_ITEMS = 120, 40
A_ITEMS, B_ITEMS = np.arange(0, 20), np.arange(20, 40)
A_USERS = np.arange(0, 60)
PARIS, BERLIN = (48.8566, 2.3522), (52.52, 13.405)


def planted(seed: int = 0) -> sparse.csr_matrix:
    """Two communities with disjoint item sets: users 0..59 use items 0..19, users 60..119 items
    20..39, each user 8 random items of their set."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(N_USERS):
        pool = A_ITEMS if user < 60 else B_ITEMS
        for item in rng.choice(pool, size=8, replace=False):
            rows.append(user)
            cols.append(item)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS))


def features() -> ItemFeatures:
    texts = [
        f"{'alpine hiking boot' if i < 20 else 'silk evening dress'} model {i} {'trail' if i < 20 else 'gala'}"
        for i in range(N_ITEMS)
    ]
    categories = [["outdoor"] if i < 20 else ["fashion"] for i in range(N_ITEMS)]
    tags = [["waterproof"] if i < 20 else ["elegant"] for i in range(N_ITEMS)]
    rng = np.random.default_rng(1)
    coords = np.array([PARIS if i < 20 else BERLIN for i in range(N_ITEMS)]) + rng.normal(0, 0.01, (N_ITEMS, 2))
    return ItemFeatures(texts=texts, categories=categories, tags=tags, coordinates=coords)


# Small, fast parameters; each algorithm as the pipeline would build it.
CASES = {
    "popularity": {},
    "trending": {},
    "als": {"factors": 8, "iterations": 10, "regularization": 0.1, "num_threads": 1},
    "als-weighted": {"factors": 8, "iterations": 10, "regularization": 0.1, "num_threads": 1, "user_weight": 0.5},
    "itemknn": {"K": 20},
    "itemknn-bm25": {"similarity": "bm25", "K": 20},
    "userknn": {"K": 10},
    "ease": {"l2": 10.0},
    "ease-dlae": {"l2": 10.0, "dropout": 0.5},
    "ease-weighted": {"l2": 10.0, "dropout": 0.5, "user_weight": 0.5},
    "content": {},
    "nearest": {},
    "hybrid": {"main_params": {"l2": 10.0}},
}


def make(case: str):
    name = case.split("-")[0]
    return build(name, **CASES[case])


@pytest.fixture(scope="module")
def X() -> sparse.csr_matrix:
    return planted()


@pytest.fixture(scope="module")
def fitted(X):
    feats = features()
    return {case: make(case).fit(X, item_features=feats) for case in CASES}


PERSONAL = [c for c in CASES if c not in {"popularity", "trending"}]


@pytest.mark.parametrize("case", PERSONAL)
def test_each_algorithm_recommends_from_the_users_own_community(fitted, X, case):
    users = np.arange(N_USERS)
    ids, _ = fitted[case].recommend(users, X[users], N=5)
    assert ids.shape == (N_USERS, 5)
    in_a = np.isin(ids, A_ITEMS)
    expected_a = (users < 60)[:, None]
    agreement = (in_a == expected_a).mean()
    assert agreement >= 0.98, f"{case}: only {agreement:.0%} of recommendations come from the user's community"
    # Already-liked items never come back.
    assert not (X.toarray()[users[:, None], ids] > 0).any()


def test_every_registered_algorithm_is_covered_by_the_planted_test():
    assert {c.split("-")[0] for c in CASES} == set(ALGORITHMS)


@pytest.mark.parametrize("case", list(CASES))
def test_batched_recommend_equals_one_user_at_a_time(fitted, X, case):
    model = fitted[case]
    users = np.array([0, 5, 61, 119, 30])
    ids, scores = model.recommend(users, X[users], N=7)
    for row, user in enumerate(users):
        one_ids, one_scores = model.recommend(int(user), X[user], N=7)
        np.testing.assert_array_equal(one_ids, ids[row][ids[row] >= 0])
        np.testing.assert_allclose(one_scores, scores[row][ids[row] >= 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_dump_then_load_gives_the_same_recommendations(fitted, X, case):
    model = fitted[case]
    restored = load(dump(model))
    assert type(restored) is type(model)
    assert restored.params == model.params
    users = np.arange(0, N_USERS, 7)
    ids, scores = model.recommend(users, X[users], N=6)
    ids2, scores2 = restored.recommend(users, X[users], N=6)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)
    if model.has_similar_items:
        np.testing.assert_array_equal(model.similar_items(3, N=5)[0], restored.similar_items(3, N=5)[0])


@pytest.mark.parametrize("case", [c for c in CASES if c not in {"popularity", "trending", "userknn"}])
def test_similarity_between_some_items_is_their_columns_of_the_full_rows(fitted, case):
    model = fitted[case]
    assert model.has_similar_items
    rng = np.random.default_rng(5)
    anchors = rng.choice(model.n_items, size=3, replace=False)
    others = rng.choice(model.n_items, size=12, replace=False)
    pairwise = model.similarity_between(anchors, others)
    assert pairwise.shape == (3, 12)
    np.testing.assert_allclose(pairwise, model._similar(anchors)[:, others], rtol=1e-5, atol=1e-6)
    # Many rows at once: each row what `similarity_between` gives it.
    many_anchors = rng.integers(0, model.n_items, size=(4, 3))
    many_others = rng.integers(0, model.n_items, size=(4, 12))
    pairs = model.similarity_pairs(many_anchors, many_others)
    assert pairs.shape == (4, 3, 12)
    for row in range(4):
        one = model.similarity_between(many_anchors[row], many_others[row])
        np.testing.assert_allclose(pairs[row], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if c not in {"popularity", "trending", "userknn"}])
def test_the_reasons_of_a_block_of_lists_are_each_lists_own(fitted, X, case):
    """What a publish stores with each list equals explaining that one list: each item's most
    similar anchor among the user's strongest training items (first on ties, never itself, only a
    positive similarity), whatever the rows' lengths and padding."""
    from recommenders.algorithms.topn import REASON_ANCHORS, best_anchors, reasons_many, recommend_many

    model = fitted[case]
    users = np.array([0, 5, 61, 119, 30, 7])
    rows = X[users]
    ids, _ = recommend_many(model, users, rows, 9)
    ids[1, 4:] = -1  # a shorter list
    anchors, slots = reasons_many(model, rows, ids, REASON_ANCHORS)
    for row in range(len(users)):
        start, end = rows.indptr[row], rows.indptr[row + 1]
        cols, weights = rows.indices[start:end], rows.data[start:end]
        order = np.argsort(-weights, kind="stable")[:REASON_ANCHORS]
        mine = cols[order[weights[order] > 0]]
        np.testing.assert_array_equal(anchors[row][anchors[row] >= 0], mine)
        valid = ids[row] >= 0
        expected = best_anchors(model, mine, ids[row][valid])
        np.testing.assert_array_equal(np.where(expected >= 0, expected, 255), slots[row][valid])
        assert (slots[row][~valid] == 255).all()
    if case != "nearest":  # the fixture's items carry no location: nothing is near anything
        assert (slots != 255).any()


def test_an_artifact_that_is_not_one_is_refused_with_a_message():
    with pytest.raises(ValueError, match="not a recommender artifact"):
        load(b"definitely not a zip")


def test_an_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="fit"):
        build("ease").recommend(0, sparse.csr_matrix((1, 3)))


def test_unknown_algorithm_and_unknown_parameter_name_what_is_accepted():
    with pytest.raises(ValueError, match=r"unknown algorithm 'nope'.*ease"):
        build("nope")
    with pytest.raises(ValueError, match=r"ease: unknown parameter\(s\) \['lambda_'\]"):
        build("ease", lambda_=3)


def test_default_is_the_hybrid():
    assert build("default").name == "hybrid"


def test_rows_must_match_user_ids(fitted, X):
    with pytest.raises(ValueError, match="one row per user"):
        fitted["ease"].recommend(np.array([0, 1]), X[:3])


# -- EASE -----------------------------------------------------------------------------------------
def test_ease_scores_equal_the_closed_form_on_a_tiny_matrix():
    X = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float64)
    lam = 2.0
    P = np.linalg.inv(X.T @ X + lam * np.eye(4))
    B = np.eye(4) - P / np.diag(P)[None, :]  # B = I - P diagMat(1/diag(P))
    assert np.allclose(np.diag(B), 0)
    model = build("ease", l2=lam).fit(sparse.csr_matrix(X))
    np.testing.assert_allclose(model.B, B, atol=1e-5)
    np.testing.assert_allclose(model.score(np.arange(5), sparse.csr_matrix(X)), X @ B, atol=1e-5)


def test_ease_with_dropout_equals_the_dlae_closed_form():
    X = sparse.random(40, 12, density=0.3, format="csr", random_state=4, dtype=np.float64)
    X.data[:] = 1.0
    G = (X.T @ X).toarray()
    p, lam = 0.5, 3.0
    expected = np.linalg.solve(G + np.diag(p / (1 - p) * np.diag(G) + lam), G)  # (G + L)^-1 G
    model = build("ease", l2=lam, dropout=p).fit(X)
    np.testing.assert_allclose(model.B, expected, atol=1e-5)


def test_ease_refuses_a_catalogue_beyond_its_bound_and_the_hybrid_falls_back_to_als(X):
    with pytest.raises(CatalogueTooLarge, match="40 items exceed max_items=30"):
        build("ease", max_items=30).fit(X)
    hybrid = build("hybrid", main_params={"max_items": 30}, fallback_params={"factors": 8, "num_threads": 1}).fit(X)
    assert hybrid.members["main"].name == "als"
    ids, _ = hybrid.recommend(np.arange(60, 70), X[60:70], N=5)
    assert np.isin(ids, B_ITEMS).mean() >= 0.9


# -- ALS ------------------------------------------------------------------------------------------
def test_als_recalculates_a_user_whose_new_events_changed_their_taste(fitted, X):
    als = fitted["als"]
    user = 3  # trained in community A
    stale, _ = als.recommend(user, X[user], N=5)
    assert np.isin(stale, A_ITEMS).all()
    fresh_row = sparse.csr_matrix((np.ones(6), (np.zeros(6), B_ITEMS[:6])), shape=(1, N_ITEMS))
    fresh, _ = als.recommend_fresh(fresh_row, N=5)
    assert np.isin(fresh, B_ITEMS).all()
    # The same through recommend(recalculate_user=True) with the known id.
    again, _ = als.recommend(user, fresh_row, N=5, recalculate_user=True)
    np.testing.assert_array_equal(again, fresh)


def test_factor_model_scores_users_it_never_saw_from_their_row(fitted):
    row = sparse.csr_matrix((np.ones(4), (np.zeros(4), A_ITEMS[:4])), shape=(1, N_ITEMS))
    ids, _ = fitted["als"].recommend(-1, row, N=5)
    assert np.isin(ids, A_ITEMS).all()


# -- popularity -----------------------------------------------------------------------------------
def test_popularity_counts_each_user_once_and_ignores_thumbs_down():
    X = sparse.csr_matrix(np.array([[5, 0, -4], [1, 0, -4], [0, 1, -4]], dtype=np.float32))
    ids, _ = build("popularity").fit(X).top(3)
    np.testing.assert_array_equal(ids, [0, 1])  # item 2 only has thumbs-down: never popular


def test_trending_prefers_recent_interactions_and_popularity_does_not():
    day = 86_400.0
    now = 100 * day
    # Item 0: 6 users, 60 days ago. Item 1: 3 users, yesterday.
    rows = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    cols = [0, 0, 0, 0, 0, 0, 1, 1, 1]
    times = [now - 60 * day] * 6 + [now - day] * 3
    X = sparse.csr_matrix((np.ones(9), (rows, cols)), shape=(9, 2))
    T = sparse.csr_matrix((times, (rows, cols)), shape=(9, 2))
    assert build("popularity").fit(X, timestamps=T, now=now).top(2)[0][0] == 0
    assert build("trending", half_life_days=7).fit(X, timestamps=T, now=now).top(2)[0][0] == 1


def test_popularity_per_group_gives_each_group_its_favourites_and_shrinks_small_groups(X):
    groups = np.where(np.arange(N_USERS) < 60, 0, 1)
    groups[-1] = 2  # a group of one visitor
    model = build("popularity", shrinkage=20).fit(X, user_groups=groups)
    ids, _ = model.recommend(
        np.arange(3), sparse.csr_matrix((3, N_ITEMS)), N=5, context=UserContext(groups=np.array([0, 1, -1]))
    )
    assert np.isin(ids[0], A_ITEMS).all()
    assert np.isin(ids[1], B_ITEMS).all()
    by_group = model.top_by_group(5)
    assert np.isin(by_group[0][0], A_ITEMS).all() and np.isin(by_group[1][0], B_ITEMS).all()
    # The lone visitor's 8 items do not make up group 2's whole list: the overall list shows through.
    lone = set(X[N_USERS - 1].indices.tolist())
    assert not set(by_group[2][0][:10].tolist()) <= lone or len(by_group[2][0]) < 10


def test_popularity_slices_accept_a_membership_matrix_for_overlapping_segments(X):
    membership = sparse.csr_matrix(
        np.column_stack([np.arange(N_USERS) < 60, np.arange(N_USERS) >= 60, np.ones(N_USERS, dtype=bool)])
    )
    model = build("popularity").fit(X, user_groups=membership)
    assert model.n_groups == 3
    assert np.isin(model.top(5, group=1)[0], B_ITEMS).all()


# -- content and nearest --------------------------------------------------------------------------
def test_content_recommends_from_stated_preferences_alone(fitted):
    empty = sparse.csr_matrix((2, N_ITEMS))
    context = UserContext(preferences=[Preferences(categories=("fashion",)), Preferences(tags=("waterproof",))])
    ids, _ = fitted["content"].recommend(np.array([-1, -1]), empty, N=5, context=context)
    assert np.isin(ids[0], B_ITEMS).all()
    assert np.isin(ids[1], A_ITEMS).all()


def test_content_preferences_match_words_of_the_text_when_items_have_no_tags(X):
    feats = features()
    no_tags = ItemFeatures(texts=feats.texts, categories=[[] for _ in feats.texts])
    model = build("content").fit(X, item_features=no_tags)
    ids, _ = model.recommend(
        -1, sparse.csr_matrix((1, N_ITEMS)), N=5, context=UserContext(preferences=[Preferences(tags=("gala",))])
    )
    assert np.isin(ids, B_ITEMS).all()


def test_content_needs_item_features(X):
    with pytest.raises(ValueError, match="content: needs item_features"):
        build("content").fit(X)


def test_haversine_distance_paris_berlin_is_about_878_km():
    km = haversine_km(np.array([PARIS[0]]), np.array([PARIS[1]]), np.array([BERLIN[0]]), np.array([BERLIN[1]]))
    assert km[0, 0] == pytest.approx(877.5, abs=2)


def test_nearest_items_from_a_point_skip_items_without_location_and_beyond_max_km():
    coords = np.array([[48.86, 2.35], [np.nan, np.nan], [52.52, 13.40], [48.90, 2.30]])
    ids, km = nearest_items(48.8566, 2.3522, coords, N=10)
    np.testing.assert_array_equal(ids, [0, 3, 2])
    assert km[0] < 1 and 870 < km[2] < 885
    ids, _ = nearest_items(48.8566, 2.3522, coords, N=10, max_km=50)
    np.testing.assert_array_equal(ids, [0, 3])
    with pytest.raises(ValueError, match="latitude must be in"):
        nearest_items(95, 0, coords)


def test_nearest_uses_the_visitors_location_when_given(fitted):
    context = UserContext(locations=np.array([BERLIN, [np.nan, np.nan]]))
    row_a = sparse.csr_matrix((np.ones(2), ([1, 1], A_ITEMS[:2])), shape=(2, N_ITEMS))
    ids, _ = fitted["nearest"].recommend(np.array([-1, -1]), row_a, N=5, context=context)
    assert np.isin(ids[0], B_ITEMS).all()  # in Berlin: Berlin's items
    assert np.isin(ids[1], A_ITEMS).all()  # no location: near the items they used (Paris)


# -- hybrid ---------------------------------------------------------------------------------------
def test_hybrid_ladder_weights_follow_how_much_each_user_has_done(fitted):
    hybrid = fitted["hybrid"]
    rows = sparse.csr_matrix((np.ones(1 + 12), ([2] + [3] * 12, [0, *range(12)])), shape=(4, N_ITEMS))
    context = UserContext(preferences=[Preferences(categories=("fashion",)), None, None, None])
    w = hybrid.weights(rows, context)
    dominant = [max(w, key=lambda role: w[role][u]) for u in range(4)]
    # stated preferences -> content; nothing -> trending; one event -> item-to-item; many -> main.
    assert dominant[:3] == ["content", "popularity", "item2item"]
    assert w["popularity"][1] == 1.0
    # Many events: the collaborative models only (EASE with its ALS partner), nothing else.
    assert w["main"][3] + w["partner"][3] == pytest.approx(1.0) and w["main"][3] > 0
    total = sum(w.values())
    np.testing.assert_allclose(total, 1.0)


def test_hybrid_serves_cold_visitors_by_group_preferences_and_recent_items(X):
    groups = np.where(np.arange(N_USERS) < 60, 0, 1)
    hybrid = build("hybrid", main_params={"l2": 10.0}).fit(X, item_features=features(), user_groups=groups)
    rows = sparse.csr_matrix(([1.0], ([2], [B_ITEMS[3]])), shape=(3, N_ITEMS))
    context = UserContext(
        groups=np.array([0, 1, -1]),
        preferences=[None, Preferences(categories=("outdoor",)), None],
        recent_items=[[], [], [int(B_ITEMS[3])]],
    )
    ids, _ = hybrid.recommend(np.array([-1, -1, -1]), rows, N=5, context=context)
    assert np.isin(ids[0], A_ITEMS).all()  # nothing done, group 0: group 0's trending
    assert np.isin(ids[1], A_ITEMS).mean() >= 0.8  # stated "outdoor" outweighs group 1's trending
    assert np.isin(ids[2], B_ITEMS).all()  # one recent B item: items like it


def test_hybrid_explains_which_member_produced_each_item_and_because_of_which_item(fitted, X):
    hybrid = fitted["hybrid"]
    session = sparse.csr_matrix(([1.0], ([0], [A_ITEMS[2]])), shape=(1, N_ITEMS))
    ids, _ = hybrid.recommend(np.array([-1]), session, N=4)
    source, because = hybrid.explain(np.array([-1]), session, ids)
    assert set(source[0]) <= {"itemknn", "trending", "content"}
    assert "itemknn" in set(source[0])
    knn = source[0] == "itemknn"
    assert (because[0][knn] == A_ITEMS[2]).all()
    heavy = X[[0]]
    ids, _ = hybrid.recommend(np.array([0]), heavy, N=4)
    source, _ = hybrid.explain(np.array([0]), heavy, ids)
    assert set(source[0]) <= {"ease", "als"}


# -- the common filters ---------------------------------------------------------------------------
def test_filter_items_and_allow_list_are_respected_and_short_lists_are_padded(fitted, X):
    model = fitted["ease"]
    ids, _ = model.recommend(0, X[0], N=5, filter_items=A_ITEMS[:15])
    assert not np.isin(ids, A_ITEMS[:15]).any()
    allowed = np.array([1, 2, 3, 25])
    ids, _ = model.recommend(np.array([0, 1]), X[[0, 1]], N=5, items=allowed)
    assert ids.shape == (2, 4)
    for row, user in enumerate([0, 1]):
        real = ids[row][ids[row] >= 0]
        assert set(real) <= set(allowed.tolist()) - set(X[user].indices.tolist())
        assert (ids[row][len(real) :] == -1).all()
    single, _ = model.recommend(0, X[0], N=5, items=allowed)
    assert (single >= 0).all()
    with pytest.raises(ValueError, match="items contains item columns outside"):
        model.recommend(0, X[0], items=np.array([99]))


def test_a_thumbs_down_item_is_never_recommended_to_that_user(fitted, X):
    row = X[60].copy().tolil()
    row[0, 21] = -4.0  # thumbs-down on a B item the user had not used
    row = row.tocsr()
    for case in ("ease", "itemknn", "als", "hybrid"):
        ids, _ = fitted[case].recommend(60, row, N=20)
        assert 21 not in ids, case


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    density=st.floats(0.02, 0.4),
    algorithm=st.sampled_from(["ease", "itemknn", "popularity", "userknn"]),
)
def test_batched_and_per_user_paths_agree_on_random_matrices(seed, density, algorithm):
    X = sparse.random(30, 25, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data[:] = 1.0
    model = build(algorithm, **({"l2": 5.0} if algorithm == "ease" else {})).fit(X)
    users = np.arange(30)
    ids, scores = model.recommend(users, X, N=6)
    for user in users:
        one, one_scores = model.recommend(int(user), X[user], N=6)
        np.testing.assert_array_equal(one, ids[user][: len(one)])
        np.testing.assert_allclose(one_scores, scores[user][: len(one)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("shape", [(3, 4), (2, 0)], ids=["no-interactions", "no-items"])
def test_every_algorithm_trains_and_answers_on_a_brand_new_installation(name, shape):
    X = sparse.csr_matrix(shape, dtype=np.float32)
    n_items = shape[1]
    feats = ItemFeatures(texts=[""] * n_items, categories=[[]] * n_items, coordinates=np.zeros((n_items, 2)))
    model = load(dump(build(name).fit(X, item_features=feats)))
    ids, scores = model.recommend(np.arange(shape[0]), X, N=3)
    assert ids.shape == (shape[0], min(3, n_items))
    assert np.all(scores[ids >= 0] <= 0) or name == "nearest"  # nothing known: no item stands out


def test_the_als_partner_weighs_in_only_once_there_are_enough_users():
    few = build("hybrid").fit(planted()[:40])
    many = build("hybrid", partner_full_users=40).fit(planted()[:40])
    assert few.partner_share == pytest.approx(0.7 * 40 / 400)
    assert many.partner_share == pytest.approx(0.7)


def test_recommending_never_modifies_the_callers_matrix(fitted):
    # Explicit zeros and duplicates: canonicalising in place would change what other threads read.
    rows = sparse.csr_matrix(
        (np.array([1.0, 0.0, 1.0], dtype=np.float32), np.array([3, 5, 3]), np.array([0, 3])), shape=(1, N_ITEMS)
    )
    before = (rows.data.copy(), rows.indices.copy(), rows.indptr.copy())
    ids, _ = fitted["ease"].recommend(0, rows, N=5)
    assert 3 not in ids
    for kept, now in zip(before, (rows.data, rows.indices, rows.indptr), strict=True):
        np.testing.assert_array_equal(kept, now)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_fitting_never_modifies_the_training_matrix(name):
    X = planted().astype(np.float64)
    X.data[::5] = 3.0
    X.data[1::7] = -2.0  # thumbs-down cells
    before = X.copy()
    times = X.copy()
    times.data = np.linspace(1e9, 1.1e9, X.nnz)
    build(name).fit(X, item_features=features(), timestamps=times, user_groups=np.arange(N_USERS) % 3)
    assert (before != X).nnz == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"few_events": 5, "many_events": 2}, "few_events <= many_events"),
        ({"popularity_weight": 0.7, "content_weight": 0.5}, "sum to at most 1"),
        ({"partner_weight": 1.0}, "partner_weight must be in"),
    ],
)
def test_hybrid_refuses_weights_that_do_not_make_a_blend(X, params, message):
    with pytest.raises(ValueError, match=message):
        build("hybrid", **params).fit(X)


def test_the_algorithms_import_no_django():
    # Invariant 4 of the design: pure maths, testable and benchmarkable without a project.
    import subprocess
    import sys

    code = (
        "import sys; import recommenders.algorithms, recommenders.algorithms.rerank, "
        "recommenders.algorithms.metrics, recommenders.algorithms.tuning; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"

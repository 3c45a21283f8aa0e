"""Re-ranking rules, one by one (pure, no database)."""

from __future__ import annotations

import numpy as np
import pytest

from recommenders.algorithms.rerank import (
    Catalogue,
    Rules,
    candidate_filter,
    cosine_similarity_fn,
    rerank,
)

N = 10
IDS = np.arange(N)
SCORES = np.linspace(1.0, 0.1, N)  # item 0 best, item 9 worst
CATALOGUE = Catalogue(
    in_stock=np.array([True, False] + [True] * 8),
    prices=np.array([10, 20, 30, 40, np.nan, 60, 70, 80, 90, 100], dtype=float),
    categories=[["shoes"], ["shoes"], ["shoes"], ["bags"], ["bags"], ["home"], ["shoes"], [], ["bags"], ["home"]],
)


def run(rules: Rules, n: int = 5, **kwargs):
    return rerank(IDS, SCORES, n=n, rules=rules, catalogue=CATALOGUE, n_items=N, **kwargs)


def test_without_rules_the_model_order_is_kept():
    out = run(Rules())
    assert out.ids.tolist() == [0, 1, 2, 3, 4]
    assert out.origins == ("model",) * 5


def test_seen_and_purchased_are_excluded_only_when_configured():
    assert run(Rules(), seen=[0], purchased=[1]).ids.tolist() == [2, 3, 4, 5, 6]
    kept = run(Rules(exclude_seen=False, exclude_purchased=True), seen=[0], purchased=[1])
    assert kept.ids.tolist() == [0, 2, 3, 4, 5]
    assert run(Rules(exclude_seen=False, exclude_purchased=False), seen=[0], purchased=[1]).ids[0] == 0


def test_stock_categories_price_and_excluded_ids():
    assert 1 not in run(Rules(in_stock_only=True)).ids
    assert run(Rules(include_categories=("bags",))).ids.tolist() == [3, 4, 8]
    assert set(run(Rules(exclude_categories=("shoes", "bags")), n=10).ids.tolist()) == {5, 7, 9}
    # Item 4 has no price: it cannot be shown as inside a range.
    assert run(Rules(min_price=25, max_price=60), n=10).ids.tolist() == [2, 3, 5]
    assert run(Rules(exclude_ids=(0, 2))).ids.tolist() == [1, 3, 4, 5, 6]


def test_candidate_filter_is_the_catalogue_wide_part_of_the_rules():
    mask = candidate_filter(N, Rules(in_stock_only=True, exclude_categories=("home",)), CATALOGUE)
    assert np.flatnonzero(~mask).tolist() == [1, 5, 9]


def test_pins_take_their_positions_and_still_obey_stock():
    out = run(Rules(pins={9: 0, 8: 2}))
    assert out.ids.tolist() == [9, 0, 8, 1, 2]
    assert out.origins[0] == "pinned" and out.origins[2] == "pinned"
    out = run(Rules(pins={1: 0}, in_stock_only=True))
    assert 1 not in out.ids  # out of stock: not even a pin shows it


def test_boosts_and_buries_move_items_whatever_the_score_sign():
    negative = -np.arange(1, N + 1, dtype=float)  # EASE-like negative scores, item 0 best
    out = rerank(IDS, negative, n=3, rules=Rules(boosts={5: 10.0}), catalogue=CATALOGUE, n_items=N)
    assert out.ids[0] == 5
    out = rerank(IDS, negative, n=3, rules=Rules(buries={0: 0.01}), catalogue=CATALOGUE, n_items=N)
    assert 0 not in out.ids


def test_category_cap_limits_items_per_primary_category():
    out = run(Rules(category_cap=1), n=5)
    assert out.ids.tolist() == [0, 3, 5, 7]  # one shoe, one bag, one home, one without category
    assert len(out.ids) == 4


def test_mmr_trades_relevance_for_diversity():
    vectors = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    ids, scores = np.array([0, 1, 2]), np.array([1.0, 0.95, 0.5])
    cat = Catalogue()
    relevance_only = rerank(
        ids,
        scores,
        n=2,
        rules=Rules(mmr_lambda=1.0),
        catalogue=cat,
        n_items=3,
        similarity=cosine_similarity_fn(vectors),
    )
    assert relevance_only.ids.tolist() == [0, 1]
    diverse = rerank(
        ids,
        scores,
        n=2,
        rules=Rules(mmr_lambda=0.5),
        catalogue=cat,
        n_items=3,
        similarity=cosine_similarity_fn(vectors),
    )
    assert diverse.ids.tolist() == [0, 2]  # the near-duplicate of item 0 gives way


def test_exploration_fills_its_share_from_the_pool_reproducibly():
    rules = Rules(exploration=0.4)
    pool = [9, 8, 7, 6]
    first = run(rules, n=5, exploration_pool=pool, seed=11)
    assert first.origins.count("exploration") == 2
    explored = [i for i, o in zip(first.ids, first.origins, strict=True) if o == "exploration"]
    assert set(explored) <= set(pool)
    assert first.origins[0] == "model"  # the model keeps the first slot
    assert len(set(first.ids.tolist())) == 5
    again = run(rules, n=5, exploration_pool=pool, seed=11)
    assert again.ids.tolist() == first.ids.tolist()
    seeds = {tuple(run(rules, n=5, exploration_pool=pool, seed=s).ids.tolist()) for s in range(20)}
    assert len(seeds) > 1


def test_exploration_pool_respects_the_hard_filters():
    out = run(Rules(exploration=0.4, in_stock_only=True), n=5, exploration_pool=[1], seed=3)
    assert 1 not in out.ids


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_price": 10, "max_price": 5}, "min_price 10 is above max_price 5"),
        ({"category_cap": 0}, "category_cap must be >= 1"),
        ({"mmr_lambda": 2}, "mmr_lambda must be in"),
        ({"exploration": 1.5}, "exploration must be in"),
        ({"boosts": {1: 0}}, "boosts factor of item 1 must be > 0"),
        ({"pins": {1: -1}}, "pin position of item 1"),
    ],
)
def test_bad_rules_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rules(**kwargs)

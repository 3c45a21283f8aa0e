"""Bounded hyperparameter search (pure, no database)."""

from __future__ import annotations

import time

import pytest

from recommenders.algorithms.metrics import split_random_per_user
from recommenders.algorithms.tuning import search, search_objective, set_param, tune
from tests.test_recommenders_algorithms import planted


def test_grid_search_tries_every_point_after_the_base_and_keeps_the_best():
    calls = []

    def objective(params):
        calls.append(params)
        return -((params["x"] - 3) ** 2) - params["y"]

    result = search_objective(
        objective, {"x": [1, 2, 3, 4], "y": [0, 1]}, base_params={"x": 1, "y": 1}, method="grid", budget_seconds=10
    )
    assert calls[0] == {"x": 1, "y": 1}  # the base first
    assert len(result.trials) == 8  # the base equals a grid point: measured once
    assert result.best_params == {"x": 3, "y": 0}
    assert dict(result.trials[0]) == {
        "params": {"x": 1, "y": 1},
        "metric": -5.0,
        "seconds": pytest.approx(0, abs=0.1),
        "error": None,
    }


def test_search_stops_within_its_time_budget():
    def slow(params):
        time.sleep(0.05)
        return params["x"]

    started = time.monotonic()
    result = search_objective(
        slow, {"x": {"low": 0.0, "high": 1.0}}, base_params={"x": 0.5}, budget_seconds=0.3, method="random"
    )
    assert time.monotonic() - started < 0.6
    assert result.stopped_by_budget
    assert 2 <= len(result.trials) <= 7


def test_random_search_is_reproducible_by_seed_and_records_failures():
    def objective(params):
        if params["k"] == 0:
            raise ValueError("k must be positive")
        return float(params["k"])

    space = {"k": [0, 1, 2, 3]}
    one = search_objective(objective, space, base_params={"k": 1}, max_trials=4, seed=5, budget_seconds=5)
    two = search_objective(objective, space, base_params={"k": 1}, max_trials=4, seed=5, budget_seconds=5)
    assert [t.params for t in one.trials] == [t.params for t in two.trials]
    failed = [t for t in one.trials if t.error]
    assert all("k must be positive" in t.error for t in failed)
    assert one.best_params == {"k": 3}


def test_nested_parameters_are_set_by_dotted_name():
    assert set_param({"main_params": {"l2": 1, "x": 2}}, "main_params.l2", 5) == {"main_params": {"l2": 5, "x": 2}}


def test_tuning_ease_on_a_validation_split_beats_a_bad_starting_lambda():
    train, validation = split_random_per_user(planted(), seed=3)
    result = search(
        "ease",
        {"l2": [1.0, 10.0, 100.0]},
        train,
        validation,
        base_params={"l2": 100_000.0},
        method="grid",
        k=5,
        budget_seconds=30,
    )
    assert result.best_params["l2"] != 100_000.0
    assert result.best_metric > result.trials[0].metric


def test_tune_uses_the_default_space_of_the_default_algorithm():
    train, validation = split_random_per_user(planted(), seed=3)
    result = tune("default", train, validation, k=5, budget_seconds=120, seed=1, max_trials=3)
    assert len(result.trials) == 3
    assert any("main_params" in t.params or "few_events" in t.params for t in result.trials[1:])


@pytest.mark.parametrize(
    ("space", "method", "message"),
    [
        ({}, "random", "space is empty"),
        ({"x": []}, "random", "has no choices"),
        ({"x": {"low": 2, "high": 1}}, "random", "low <= high"),
        ({"x": {"low": 0, "high": 1}}, "grid", "grid search needs a list"),
        ({"x": {"low": 0, "high": 1, "log": True}}, "random", "low must be > 0"),
    ],
)
def test_bad_spaces_say_what_is_wrong(space, method, message):
    with pytest.raises(ValueError, match=message):
        search_objective(lambda p: 0.0, space, method=method)

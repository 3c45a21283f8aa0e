"""Bounded hyperparameter search: random or grid over a given space, on a validation split,
within a time budget; returns the best parameters and the log of every trial.

The first trial is always the base parameters, so the result is never worse on validation than
not tuning, and a budget too small for any search still returns a measured answer. A trial is not
started when the mean trial time so far says it would overrun the budget.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from recommenders.algorithms.metrics import evaluate
from recommenders.algorithms.registry import build

# A space maps a parameter name ("l2", or "main_params.l2" for a nested one) to either a list of
# choices or a range {"low": .., "high": .., "log": bool, "int": bool} (ranges: random search only).
Space = Mapping[str, Any]

# What tune() searches when no space is given: the knobs that matter per algorithm (factors,
# regularisation, confidence, neighbourhood size, blend shares), over ranges that stay cheap.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "als": {
        "factors": [32, 64, 128],
        "regularization": {"low": 0.01, "high": 10.0, "log": True},
        "alpha": {"low": 0.5, "high": 40.0, "log": True},
        "iterations": [10, 15, 25],
        "user_weight": [0.0, 0.25, 0.5],
    },
    "itemknn": {"K": [20, 50, 100, 200, 400], "similarity": ["cosine", "bm25"]},
    "userknn": {"K": [20, 50, 100, 200]},
    "ease": {
        "l2": {"low": 50.0, "high": 2000.0, "log": True},
        "dropout": [0.0, 0.3, 0.5, 0.6],
        "user_weight": [0.0, 0.25, 0.5],
    },
    "popularity": {"half_life_days": [None, 7.0, 30.0, 90.0]},
    "trending": {"half_life_days": [3.0, 7.0, 14.0]},
    "content": {"category_weight": [0.5, 1.0, 2.0], "tag_weight": [0.0, 0.5, 1.0]},
    "hybrid": {
        "main_params.l2": {"low": 100.0, "high": 1500.0, "log": True},
        "partner_weight": [0.0, 0.3, 0.5, 0.6, 0.7],
        "few_events": [1, 2, 3, 5],
        "many_events": [5, 10, 20, 40],
        "popularity_weight": [0.0, 0.1, 0.25, 0.5],
        "item2item_params.K": [50, 100, 200],
    },
}


@dataclass
class Trial:
    params: dict[str, Any]
    metric: float | None
    seconds: float
    error: str | None = None

    # dict(trial) gives the JSON-able record (the mapping protocol: keys() and [key]).
    def keys(self) -> list[str]:
        return ["params", "metric", "seconds", "error"]

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_metric: float
    metric: str
    trials: list[Trial] = field(default_factory=list)
    stopped_by_budget: bool = False

    def log(self) -> list[dict[str, Any]]:
        """JSON-able trial log (what the model registry stores)."""
        return [asdict(t) for t in self.trials]


def set_param(params: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with ``dotted`` ("main_params.l2") set to ``value``."""
    out = copy.deepcopy(params)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        node[key] = dict(child) if isinstance(child, Mapping) else {}
        node = node[key]
    node[leaf] = value
    return out


def _check_space(space: Space, method: str) -> None:
    if not space:
        raise ValueError("tuning: the search space is empty")
    for name, spec in space.items():
        if isinstance(spec, list | tuple):
            if not spec:
                raise ValueError(f"tuning: space[{name!r}] has no choices")
        elif isinstance(spec, Mapping):
            if method == "grid":
                raise ValueError(f"tuning: space[{name!r}] is a range; grid search needs a list of choices")
            if not {"low", "high"} <= set(spec) or spec["low"] > spec["high"]:
                raise ValueError(f"tuning: space[{name!r}] must have low <= high")
            if spec.get("log") and spec["low"] <= 0:
                raise ValueError(f"tuning: space[{name!r}] is logarithmic, so low must be > 0")
        else:
            raise ValueError(f"tuning: space[{name!r}] must be a list of choices or a {{low, high}} range")


def _sample(spec: Any, rng: np.random.Generator) -> Any:
    if isinstance(spec, list | tuple):
        value = spec[int(rng.integers(len(spec)))]
        return value.item() if isinstance(value, np.generic) else value
    low, high = float(spec["low"]), float(spec["high"])
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)
    return round(value) if spec.get("int") else float(value)


def candidates(space: Space, *, method: str, seed: int, base: dict[str, Any]):
    """Parameter sets to try, base first: every grid point in order, or random samples forever."""
    yield base
    names = list(space)
    if method == "grid":
        for combo in itertools.product(*(space[n] for n in names)):
            params = base
            for name, value in zip(names, combo, strict=True):
                params = set_param(params, name, value)
            yield params
    elif method == "random":
        rng = np.random.default_rng(seed)
        while True:
            params = base
            for name in names:
                params = set_param(params, name, _sample(space[name], rng))
            yield params
    else:
        raise ValueError(f"tuning: method must be 'random' or 'grid', got {method!r}")


def search_objective(
    objective: Callable[[dict[str, Any]], float],
    space: Space,
    *,
    base_params: dict[str, Any] | None = None,
    budget_seconds: float = 60.0,
    method: str = "random",
    max_trials: int | None = None,
    seed: int = 42,
    metric: str = "metric",
) -> SearchResult:
    """Maximise ``objective(params)`` over ``space`` within ``budget_seconds`` (any objective: the
    pipeline uses it for event weights, which need a new matrix per trial)."""
    _check_space(space, method)
    if budget_seconds <= 0:
        raise ValueError(f"tuning: budget_seconds must be > 0, got {budget_seconds}")
    base = dict(base_params or {})
    started = time.monotonic()
    trials: list[Trial] = []
    seen: set[str] = set()
    stopped = False
    limit = max_trials if max_trials is not None else (10_000 if method == "random" else None)
    repeats = 0
    for params in candidates(space, method=method, seed=seed, base=base):
        key = repr(sorted(params.items()))
        if key in seen:  # grid points equal to the base, or a repeated random draw
            repeats += 1
            if repeats > 200:
                break  # a small discrete space is exhausted
            continue
        repeats = 0
        seen.add(key)
        if limit is not None and len(trials) >= limit:
            break
        elapsed = time.monotonic() - started
        timed = [t.seconds for t in trials]
        if trials and elapsed + (sum(timed) / len(timed)) > budget_seconds:
            stopped = True
            break
        t0 = time.monotonic()
        try:
            value, error = float(objective(params)), None
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # a bad corner of the space
            value, error = None, f"{type(exc).__name__}: {exc}"
        trials.append(Trial(params=params, metric=value, seconds=round(time.monotonic() - t0, 4), error=error))
    scored = [t for t in trials if t.metric is not None and math.isfinite(t.metric)]
    if not scored:
        raise ValueError(f"tuning: no trial succeeded; first error: {trials[0].error if trials else 'none'}")
    best = max(scored, key=lambda t: t.metric)  # first of equals: the base wins ties
    return SearchResult(
        best_params=best.params, best_metric=best.metric, metric=metric, trials=trials, stopped_by_budget=stopped
    )


def search(
    algorithm: str,
    space: Space,
    train: sparse.csr_matrix,
    validation: sparse.csr_matrix,
    *,
    base_params: dict[str, Any] | None = None,
    metric: str | None = None,
    k: int = 10,
    budget_seconds: float = 60.0,
    method: str = "random",
    max_trials: int | None = None,
    seed: int = 42,
    fit_kwargs: dict[str, Any] | None = None,
    users: np.ndarray | None = None,
) -> SearchResult:
    """Tune ``algorithm``'s parameters: fit on ``train``, score ``metric`` on ``validation``
    (e.g. from ``metrics.split_random_per_user(train, seed=...)`` or a time holdout). ``metric``
    defaults to NDCG at ``k``."""
    fit_kwargs = fit_kwargs or {}
    metric = metric or f"ndcg@{k}"
    probe = evaluate_metric_names(k)
    if metric not in probe:
        raise ValueError(f"tuning: unknown metric {metric!r}; known: {sorted(probe)}")

    def objective(params: dict[str, Any]) -> float:
        model = build(algorithm, **params).fit(train, **fit_kwargs)
        return evaluate(model, train, validation, k=k, users=users)[metric]

    return search_objective(
        objective,
        space,
        base_params=base_params,
        budget_seconds=budget_seconds,
        method=method,
        max_trials=max_trials,
        seed=seed,
        metric=metric,
    )


def evaluate_metric_names(k: int) -> set[str]:
    return {f"precision@{k}", f"recall@{k}", f"map@{k}", f"ndcg@{k}", "coverage"}


def tune(
    algorithm: str,
    train: sparse.csr_matrix,
    validation: sparse.csr_matrix,
    *,
    base_params: dict[str, Any] | None = None,
    space: Space | None = None,
    k: int = 10,
    metric: str | None = None,
    budget_seconds: float = 60.0,
    item_features: Any = None,
    users: np.ndarray | None = None,
    method: str = "random",
    seed: int = 42,
    max_trials: int | None = None,
) -> SearchResult:
    """``search`` with the algorithm's DEFAULT_SPACES when no space is given ("default" is the
    registry's default algorithm); what the training pipeline calls."""
    from recommenders.algorithms.registry import DEFAULT_ALGORITHM

    name = DEFAULT_ALGORITHM if algorithm == "default" else algorithm
    if space is None:
        if name not in DEFAULT_SPACES:
            raise ValueError(f"tuning: no default search space for {algorithm!r}; pass space=")
        space = DEFAULT_SPACES[name]
    return search(
        name,
        space,
        train,
        validation,
        base_params=base_params,
        metric=metric or f"ndcg@{k}",
        k=k,
        budget_seconds=budget_seconds,
        method=method,
        seed=seed,
        max_trials=max_trials,
        fit_kwargs={"item_features": item_features} if item_features is not None else None,
        users=users,
    )

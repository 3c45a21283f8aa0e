"""Name -> algorithm class, and ``build(name, **params)``: how the pipeline turns a configuration
(``RecommenderConfig.algorithm`` / ``params``) into a model."""

from __future__ import annotations

from typing import Any

from recommenders.algorithms.als import ALS
from recommenders.algorithms.base import Recommender
from recommenders.algorithms.content import Content
from recommenders.algorithms.ease import EASE
from recommenders.algorithms.hybrid import Hybrid
from recommenders.algorithms.nearest import Nearest
from recommenders.algorithms.neighbours import ItemKNN, UserKNN
from recommenders.algorithms.popularity import Popularity, Trending

ALGORITHMS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, Trending, ALS, ItemKNN, UserKNN, EASE, Content, Nearest, Hybrid)
}

# The configuration the platform trains when nothing else is chosen.
DEFAULT_ALGORITHM = "hybrid"


def build(name: str, **params: Any) -> Recommender:
    """A new, unfitted model. ``name`` is a key of ALGORITHMS or "default"; unknown names and unknown
    parameters raise ValueError with the accepted ones."""
    key = DEFAULT_ALGORITHM if name == "default" else name
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)} or 'default'")
    return ALGORITHMS[key](**params)

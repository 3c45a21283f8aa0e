"""Recommender configurations: the default one every installation starts with."""

from __future__ import annotations

from recommenders.models import RecommenderConfig
from recommenders.selectors import DEFAULT_CONFIG_KEY, config_default


def config_default_ensure() -> RecommenderConfig:
    """The default configuration, created on first use (algorithm "default": the algorithms'
    recommended choice, see `recommenders.algorithms.registry.DEFAULT_ALGORITHM`)."""
    config = config_default()
    if config is not None:
        return config
    config, _ = RecommenderConfig.objects.get_or_create(
        key=DEFAULT_CONFIG_KEY,
        defaults={"name": "Default", "algorithm": "default", "is_default": True},
    )
    return config

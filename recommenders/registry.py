"""Model registry, read side: which version of a configuration is live, and that version loaded
in memory (memoized per process by version, so a switch of the live pointer loads the new model
once and never mixes it with the old one).

The live pointer lives in the cache (one key per configuration, replaced in one write when a
version is published); the database row with status "live" is the source of truth it falls back to
when the cache is empty or down.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from django.core.cache import cache

from recommenders import cache_keys
from recommenders.algorithms.base import ItemFeatures, Recommender
from recommenders.artifacts import artifact_load

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A trained version ready to score: the model plus the index maps it was trained with."""

    config_key: str
    version: int
    model_version_id: int
    algorithm: str
    recommender: Recommender
    item_ids: np.ndarray  # column -> external id
    profile_ids: np.ndarray  # row -> profile id
    user_items: sp.csr_matrix
    item_features: ItemFeatures | None
    trained_through: datetime | None
    published_at: datetime | None
    item_index: dict[str, int] = field(default_factory=dict)
    user_index: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.item_index:
            self.item_index = {str(external_id): i for i, external_id in enumerate(self.item_ids.tolist())}
        if not self.user_index:
            self.user_index = {int(pid): row for row, pid in enumerate(self.profile_ids.tolist())}


_lock = threading.Lock()
_loaded: dict[str, LoadedModel] = {}
_pointers: dict[str, tuple[float, int | None]] = {}


def _live_row(config_key: str):
    from recommenders.models import ModelVersion

    return (
        ModelVersion.objects.filter(config__key=config_key, status=ModelVersion.Status.LIVE)
        .only("id", "version", "artifact", "algorithm", "trained_through", "published_at", "config_id")
        .first()
    )


def live_version(config_key: str) -> int | None:
    """Live version number of a configuration: process memo, then the cache, then the database."""
    now = time.monotonic()
    hit = _pointers.get(config_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    version: int | None = None
    try:
        version = cache.get(cache_keys.live_pointer(config_key))
    except Exception:  # Redis down: the database answers, slower.
        logger.warning("live pointer of %s unreadable from the cache", config_key, exc_info=True)
        version = None
    if version is None:
        row = _live_row(config_key)
        version = row.version if row else None
        if version is not None:
            live_pointer_set(config_key=config_key, version=version)
    _pointers[config_key] = (now + cache_keys.LIVE_POINTER_LOCAL_TTL, version)
    return version


def live_pointer_set(*, config_key: str, version: int | None) -> None:
    """Point readers at `version` (one cache write: the switch is atomic for every reader)."""
    _pointers.pop(config_key, None)
    try:
        if version is None:
            cache.delete(cache_keys.live_pointer(config_key))
        else:
            cache.set(cache_keys.live_pointer(config_key), int(version), cache_keys.LIVE_POINTER_TTL)
    except Exception:
        logger.warning("live pointer of %s not written to the cache", config_key, exc_info=True)


def model_load(model_version) -> LoadedModel:
    """Load one ModelVersion's artifact from storage (no memo)."""
    from recommenders.algorithms.base import load

    bundle = artifact_load(model_version.artifact)
    return LoadedModel(
        config_key=bundle.meta.get("config_key", ""),
        version=model_version.version,
        model_version_id=model_version.id,
        algorithm=model_version.algorithm or bundle.meta.get("algorithm", ""),
        recommender=load(bundle.model),
        item_ids=bundle.item_ids,
        profile_ids=bundle.profile_ids,
        user_items=bundle.user_items,
        item_features=bundle.item_features,
        trained_through=bundle.trained_through,
        published_at=model_version.published_at,
    )


def live_model(config_key: str) -> LoadedModel | None:
    """The live model of a configuration, loaded once per process and version; None if none is live."""
    version = live_version(config_key)
    if version is None:
        return None
    loaded = _loaded.get(config_key)
    if loaded is not None and loaded.version == version:
        return loaded
    with _lock:
        loaded = _loaded.get(config_key)
        if loaded is not None and loaded.version == version:
            return loaded
        from recommenders.models import ModelVersion

        row = ModelVersion.objects.filter(config__key=config_key, version=version).first()
        if row is None or not row.artifact:
            return None
        try:
            loaded = model_load(row)
        except Exception:
            logger.exception("artifact of %s v%s could not be loaded", config_key, version)
            return None
        loaded.config_key = config_key
        _loaded[config_key] = loaded
        # What is loaded now (the model, the process's imports) stays for the process's life: out of
        # the cyclic collector's way. Otherwise every full collection walks it all, a pause of the
        # whole process of 100+ ms on a served model (the p99 of every request in flight).
        gc.freeze()
        return loaded


def registry_forget() -> None:
    """Drop the process's memo (tests; a worker after a publish it did itself)."""
    _loaded.clear()
    _pointers.clear()

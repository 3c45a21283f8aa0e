"""Promotion gate and publishing of a trained version.

Gate: a version goes live only if it is not worse than the live one on the configuration's metric,
within its tolerance, both measured on the new training's holdout (the live model is re-scored on
it). Otherwise it stays a candidate, with the reason shown in the admin.

Publish: the lists of active users are written under the version's own cache keys first; only then
does the version become live (database) and the live pointer move (one cache write). Readers thus
see either the old version's lists or the new one's, never a mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from recommenders.artifacts import artifact_delete
from recommenders.models import ModelVersion
from recommenders.registry import LoadedModel, live_pointer_set, model_load
from recommenders.store import toplists_write
from tracking.models import Profile

logger = logging.getLogger(__name__)

PUBLISH_BLOCK = 4096
# How many seen items a factor model's search looks past per user (see _top_block).
SEEN_CAP = 200


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str


def gate(version: ModelVersion) -> tuple[bool, str]:
    """(passes, why) for the promotion of `version` over the live version of its configuration."""
    config = version.config
    metric = config.promotion_metric
    ours = (version.metrics.get("model") or {}).get(metric)
    if ours is None:
        return False, f"{metric} was not computed (no user had a held-out interaction to evaluate on)"
    live = ModelVersion.objects.filter(config=config, status=ModelVersion.Status.LIVE).exclude(pk=version.pk).first()
    baseline = (version.metrics.get("popularity") or {}).get(metric)
    versus_baseline = f"; popularity {baseline:.4f}" if baseline is not None else ""
    if live is None:
        return True, f"first live version of {config.key}: {metric} {ours:.4f}{versus_baseline}"
    same_holdout = version.metrics.get("live_version") == live.version and metric in (version.metrics.get("live") or {})
    theirs = (version.metrics.get("live") if same_holdout else live.metrics.get("model") or {}).get(metric)
    if theirs is None:
        return True, f"live v{live.version} has no {metric} to compare with: {metric} {ours:.4f}{versus_baseline}"
    where = "on the same holdout" if same_holdout else "on its own holdout"
    floor = theirs * (1 - config.promotion_tolerance)
    if ours >= floor:
        return True, (
            f"{metric} {ours:.4f} vs live v{live.version} {theirs:.4f} {where} "
            f"(tolerance {config.promotion_tolerance:.0%}){versus_baseline}"
        )
    return False, (
        f"{metric} {ours:.4f} is below live v{live.version}'s {theirs:.4f} {where} "
        f"by more than the tolerance ({config.promotion_tolerance:.0%}){versus_baseline}"
    )


def version_promote(
    *, version: ModelVersion, timer=None, force: bool = False, loaded: LoadedModel | None = None
) -> Outcome:
    """Apply the gate (unless `force`: a marketer's "make live" in the admin) and publish. `loaded`:
    the model as the trainer holds it in memory (else it is read back from its artifact)."""
    passes, reason = gate(version)
    if force and not passes:
        passes, reason = True, f"made live by hand over the gate ({reason})"
    if not passes:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.CANDIDATE, reason=reason)
        return Outcome(ModelVersion.Status.CANDIDATE, reason)
    stage = timer.stage("publish") if timer is not None else nullcontext()
    with stage:
        try:
            if loaded is None:
                loaded = model_load(version)
            loaded.config_key = version.config.key
            count = lists_publish(loaded=loaded, top_n=version.config.top_n, active_days=version.config.active_days)
        except Exception as exc:
            logger.exception("publishing %s failed", version)
            why = f"publishing failed ({type(exc).__name__}: {exc}); the live version is unchanged"
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.REJECTED, reason=why)
            return Outcome(ModelVersion.Status.REJECTED, why)
        version_make_live(version=version, reason=f"{reason}; {count} lists published")
    artifacts_prune(config_id=version.config_id)
    return Outcome(ModelVersion.Status.LIVE, reason)


def active_rows(loaded: LoadedModel, *, active_days: int) -> np.ndarray:
    """Rows of the model's users seen in the last `active_days` (they get precomputed lists)."""
    cutoff = timezone.now() - timedelta(days=active_days)
    active = np.fromiter(
        Profile.objects.filter(last_seen_at__gte=cutoff).values_list("id", flat=True).iterator(chunk_size=20000),
        dtype=np.int64,
    )
    return np.flatnonzero(np.isin(loaded.profile_ids, active))


def _top_block(recommender, block: np.ndarray, rows, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-N of a block of users, their already-seen items left out.

    Factor models (trained user and item factors) go through implicit's fused, multi-threaded
    top-k, which never materialises the users x items score block. It is asked for N plus as many
    as the block's users have seen (capped), unfiltered, and the seen items are then dropped with
    one vectorised membership test: implicit's own filter slices the sparse matrix per tiny batch
    and costs more than the search. A user who saw more than the cap may get a shorter (still
    exact) list. Every other model uses its own `recommend`."""
    user_factors = getattr(recommender, "user_factors", None)
    item_factors = getattr(recommender, "item_factors", None)
    if not (isinstance(user_factors, np.ndarray) and isinstance(item_factors, np.ndarray)):
        return recommender.recommend(block, rows, N=top_n)
    from implicit.cpu.topk import topk

    rows = rows.tocsr()
    seen = np.diff(rows.indptr)
    k = min(top_n + min(int(seen.max()) if len(seen) else 0, SEEN_CAP), item_factors.shape[0])
    ids, scores = topk(
        np.ascontiguousarray(item_factors, dtype=np.float32),
        np.ascontiguousarray(user_factors[block], dtype=np.float32),
        k,
        num_threads=0,
    )
    n_items = item_factors.shape[0]
    seen_codes = np.repeat(np.arange(len(block), dtype=np.int64), seen) * n_items + rows.indices
    drop = np.isin(np.arange(len(block), dtype=np.int64)[:, None] * n_items + ids, seen_codes)
    drop |= (ids < 0) | ~np.isfinite(scores)
    order = np.argsort(drop, axis=1, kind="stable")[:, :top_n]  # kept ones first, rank order kept
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    scores = np.take_along_axis(scores, order, axis=1)
    ids[np.take_along_axis(drop, order, axis=1)] = -1
    return ids, scores


def _lists(loaded: LoadedModel, rows: np.ndarray, top_n: int) -> Iterator[tuple[int, list[str], np.ndarray]]:
    item_ids = loaded.item_ids
    # Users with similar history lengths share blocks, so a block's "N + seen" stays small.
    rows = rows[np.argsort(np.diff(loaded.user_items.indptr)[rows], kind="stable")]
    for start in range(0, len(rows), PUBLISH_BLOCK):
        block = rows[start : start + PUBLISH_BLOCK]
        ids, scores = _top_block(loaded.recommender, block, loaded.user_items[block], top_n)
        for profile_id, row_ids, row_scores in zip(loaded.profile_ids[block].tolist(), ids, scores, strict=True):
            valid = row_ids >= 0
            yield profile_id, item_ids[row_ids[valid]].tolist(), row_scores[valid]


def lists_publish(*, loaded: LoadedModel, top_n: int, active_days: int) -> int:
    """Precompute the top-N of every active user and write them under the version's keys."""
    rows = active_rows(loaded, active_days=active_days)
    return toplists_write(
        config_key=loaded.config_key,
        version=loaded.version,
        lists=_lists(loaded, rows, top_n),
        computed_at=time.time(),
    )


def version_make_live(*, version: ModelVersion, reason: str) -> None:
    """Retire the live version and make this one live (one transaction), then move the pointer."""
    now = timezone.now()
    with transaction.atomic():
        ModelVersion.objects.filter(config_id=version.config_id, status=ModelVersion.Status.LIVE).exclude(
            pk=version.pk
        ).update(status=ModelVersion.Status.RETIRED, reason=f"replaced by v{version.version}")
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.LIVE, reason=reason, published_at=now
        )
    live_pointer_set(config_key=version.config.key, version=version.version)


def artifacts_prune(*, config_id: int) -> int:
    """Delete the artifacts of old retired/rejected versions beyond the most recent few (their rows
    and metrics stay, for the history)."""
    keep = settings.RECOMMENDERS_ARTIFACTS_KEEP
    old = (
        ModelVersion.objects.filter(config_id=config_id)
        .exclude(status__in=[ModelVersion.Status.LIVE, ModelVersion.Status.CANDIDATE])
        .exclude(artifact="")
        .order_by("-version")[keep:]
    )
    pruned = 0
    for version in old:
        artifact_delete(version.artifact)
        ModelVersion.objects.filter(pk=version.pk).update(artifact="")
        pruned += 1
    return pruned

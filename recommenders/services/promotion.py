"""Promotion gate and publishing of a trained version.

Gate: a version goes live only if it is not worse than the live one on the configuration's metric,
within its tolerance, both measured on the new training's holdout (the live model is re-scored on
it). Otherwise it stays a candidate, with the reason shown in the admin.

Publish: the lists of active users are written under the version's own cache keys first; only then
does the version become live (database) and the live pointer move (one cache write). Readers thus
see either the old version's lists or the new one's, never a mix. A trainer computes the lists while
it evaluates (`lists_build`), but they reach the cache only once the version has passed the gate.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from scipy import sparse

from recommenders.algorithms.base import Recommender
from recommenders.algorithms.topn import REASON_ANCHORS, reasons_many, recommend_many
from recommenders.artifacts import artifact_delete
from recommenders.models import ModelVersion
from recommenders.registry import LoadedModel, live_pointer_set, model_load
from recommenders.store import toplist_names, toplist_values, toplists_put
from tracking.models import Profile

logger = logging.getLogger(__name__)

# Users scored per block of a publish.
PUBLISH_BLOCK = 1024
# Lists computed ahead of the gate wait in memory up to about this many (then the build waits).
PENDING_LISTS = 1 << 18


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
    *,
    version: ModelVersion,
    timer=None,
    force: bool = False,
    loaded: LoadedModel | None = None,
    build: ListsBuild | None = None,
) -> Outcome:
    """Apply the gate (unless `force`: a marketer's "make live" in the admin) and publish. `loaded`:
    the model as the trainer holds it in memory (else it is read back from its artifact); `build`:
    its lists, already being computed (`lists_build`), written only if the version passes."""
    passes, reason = gate(version)
    if force and not passes:
        passes, reason = True, f"made live by hand over the gate ({reason})"
    if not passes:
        if build is not None:
            build.cancel()
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.CANDIDATE, reason=reason)
        return Outcome(ModelVersion.Status.CANDIDATE, reason)
    stage = timer.stage("publish") if timer is not None else nullcontext()
    with stage:
        try:
            if loaded is None:
                loaded = model_load(version)
            loaded.config_key = version.config.key
            count = lists_publish(
                loaded=loaded, top_n=version.config.top_n, active_days=version.config.active_days, build=build
            )
        except Exception as exc:
            logger.exception("publishing %s failed", version)
            why = f"publishing failed ({type(exc).__name__}: {exc}); the live version is unchanged"
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.REJECTED, reason=why)
            return Outcome(ModelVersion.Status.REJECTED, why)
        version_make_live(version=version, reason=f"{reason}; {count} lists published")
    _visitors_warm_enqueue(active_days=version.config.active_days)
    artifacts_prune(config_id=version.config_id)
    return Outcome(ModelVersion.Status.LIVE, reason)


def _visitors_warm_enqueue(*, active_days: int) -> None:
    """The visitors whose lists were just published get their visitor cache entries (a worker
    task, after the commit): their first cached answer then reads no database."""
    from recommenders.tasks import visitors_warm_task

    def enqueue() -> None:
        try:
            visitors_warm_task.delay(active_days)
        except Exception:  # the broker is down: the entries are written by the first requests instead
            logger.warning("could not queue recommenders.visitors_warm", exc_info=True)

    transaction.on_commit(enqueue)


def active_rows(profile_ids: np.ndarray, *, active_days: int) -> np.ndarray:
    """Rows of a model's users (`profile_ids`: row -> profile) seen in the last `active_days`: they
    get precomputed lists."""
    cutoff = timezone.now() - timedelta(days=active_days)
    active = np.fromiter(
        Profile.objects.filter(last_seen_at__gte=cutoff).values_list("id", flat=True).iterator(chunk_size=20000),
        dtype=np.int64,
    )
    return np.flatnonzero(np.isin(profile_ids, active))


class ListsBuild:
    """The top-N lists of a model's active users, computed and encoded block by block.

    The trainer starts one as soon as it holds the model it would publish: a background thread
    scores blocks (BLAS and numpy, which release the GIL) on another core while the version is
    evaluated and registered. Nothing is written anywhere here: `lists_publish` writes the blocks
    once the version has passed the gate (rather than wait for one, the publishing thread computes
    a block nobody has taken yet), and a version that fails the gate cancels the build. Finished
    blocks wait in a bounded queue (then the background thread waits), so memory stays bounded
    however many users are active."""

    def __init__(
        self,
        *,
        recommender: Recommender,
        user_items: sparse.csr_matrix,
        profile_ids: np.ndarray,
        item_ids: np.ndarray,
        rows: np.ndarray,
        top_n: int,
    ) -> None:
        self.computed_at = time.time()
        self.seconds = 0.0  # time spent computing, by either thread (not waiting)
        self._model, self._user_items, self._top_n = recommender, user_items, top_n
        self._profile_ids, self._names = profile_ids, toplist_names(item_ids)
        self._blocks = [rows[start : start + PUBLISH_BLOCK] for start in range(0, len(rows), PUBLISH_BLOCK)]
        self._claims = itertools.count()  # next() is atomic: each block is computed by one thread
        self._lock = threading.Lock()
        self._done: queue.Queue = queue.Queue(maxsize=max(2, PENDING_LISTS // PUBLISH_BLOCK))
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toplists-build", daemon=True)
        self._thread.start()

    def _claim(self) -> int | None:
        index = next(self._claims)
        return index if index < len(self._blocks) else None

    def _compute(self, index: int) -> tuple[list[int], list[bytes]]:
        began = time.perf_counter()
        block = self._blocks[index]
        rows = self._user_items[block]
        ids, scores = recommend_many(self._model, block, rows, self._top_n)
        # Each list's reasons ("because you viewed X") are stored with it: a cached answer reads them.
        anchors, slots = reasons_many(self._model, rows, ids, REASON_ANCHORS)
        values = toplist_values(
            names=self._names, ids=ids, scores=scores, computed_at=self.computed_at, anchors=anchors, slots=slots
        )
        with self._lock:
            self.seconds += time.perf_counter() - began
        return self._profile_ids[block].tolist(), values

    def _run(self) -> None:
        try:
            while not self._cancelled.is_set() and (index := self._claim()) is not None:
                self._put(self._compute(index))
        except BaseException as exc:  # handed to the consumer, re-raised in its thread
            self._put(exc)

    def _put(self, item) -> None:
        while not self._cancelled.is_set():
            try:
                self._done.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def blocks(self) -> Iterator[tuple[list[int], list[bytes]]]:
        """(profile ids, encoded lists) per block: the finished ones first, else one this thread
        computes itself, else it waits for the background thread's last; raises what either raised."""
        for _ in range(len(self._blocks)):
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                index = self._claim()
                item = self._done.get() if index is None else self._compute(index)
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop the background thread (if it still runs) and wait for it."""
        self._cancelled.set()
        self._thread.join()


def lists_build(
    *,
    recommender: Recommender,
    user_items: sparse.csr_matrix,
    profile_ids: np.ndarray,
    item_ids: np.ndarray,
    top_n: int,
    active_days: int,
) -> ListsBuild:
    """Start computing the lists of the model's active users (see `ListsBuild`)."""
    return ListsBuild(
        recommender=recommender,
        user_items=user_items,
        profile_ids=profile_ids,
        item_ids=item_ids,
        rows=active_rows(profile_ids, active_days=active_days),
        top_n=top_n,
    )


def lists_publish(*, loaded: LoadedModel, top_n: int, active_days: int, build: ListsBuild | None = None) -> int:
    """Precompute the top-N of every active user and write them under the version's keys. `build`:
    the lists already being computed from this very model (else they are computed now, the writes
    of each block overlapping the computation of the next)."""
    if build is None:
        build = lists_build(
            recommender=loaded.recommender,
            user_items=loaded.user_items,
            profile_ids=loaded.profile_ids,
            item_ids=loaded.item_ids,
            top_n=top_n,
            active_days=active_days,
        )
    batch = max(1, settings.RECOMMENDERS_PUBLISH_BATCH)
    written = 0
    try:
        for profile_ids, values in build.blocks():
            for start in range(0, len(values), batch):
                written += toplists_put(
                    config_key=loaded.config_key,
                    version=loaded.version,
                    profile_ids=profile_ids[start : start + batch],
                    values=values[start : start + batch],
                )
    finally:
        build.cancel()
    return written


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
